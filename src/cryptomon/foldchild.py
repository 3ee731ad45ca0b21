"""The child process of a two-process fold (`readmodels.fold_log`).

    python -m cryptomon.foldchild < request > answer

Reads a `SplitRequest` (msgpack) on stdin, folds the projections it names over the log
read-only, and writes a `SplitAnswer` (msgpack) on stdout. Any error: a traceback on
stderr and a non-zero exit, which the parent reports.
"""

from __future__ import annotations

import asyncio
import resource
import sys

import msgspec

from cryptomon.events.log import open_event_log
from cryptomon.projections import Projections
from cryptomon.readmodels import CHILD_FOLDS, SplitAnswer, SplitRequest, fold_serial


async def fold(request: SplitRequest) -> SplitAnswer:
    start = Projections.restore(request.start, request.settings, only=CHILD_FOLDS)
    projections = start.subset(CHILD_FOLDS)
    async with await open_event_log(request.database, readonly=True) as store:
        folded = await fold_serial(projections, store, request.until)
    # ru_maxrss is in KiB on Linux.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return SplitAnswer(projections.snapshot_state(CHILD_FOLDS), folded, peak)


def main() -> None:
    request = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=SplitRequest)
    answer = asyncio.run(fold(request))
    sys.stdout.buffer.write(msgspec.msgpack.encode(answer))


if __name__ == "__main__":
    main()
