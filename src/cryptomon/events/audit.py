"""Audits of the stored log: walk the hash chain, export ranges as JSON Lines.

Both read the archive and the database as one log, a page at a time, so
memory stays flat for any log size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

import msgspec

from cryptomon.events.archive import ArchivedEvent, iter_log_rows
from cryptomon.events.chain import GENESIS_HASH
from cryptomon.events.log import EventLog

Progress = Callable[[int], None]


class ChainReport(msgspec.Struct, frozen=True):
    ok: bool
    count: int
    last_position: int
    last_hash: str
    broken_at: int | None = None
    reason: str | None = None


async def verify_chain(
    store: EventLog, progress: Progress | None = None, *, to_position: int | None = None
) -> ChainReport:
    """Recompute every hash in order (up to `to_position`, or the whole log);
    report the first position that breaks."""
    previous_hash = GENESIS_HASH
    previous_position = 0
    count = 0
    async for row in iter_log_rows(store, to_position=to_position):
        if row.position != previous_position + 1:
            return ChainReport(
                False, count, previous_position, previous_hash, previous_position + 1,
                f"positions {previous_position + 1}..{row.position - 1} are missing (deleted rows)",
            )  # fmt: skip
        try:
            expected = row.expected_hash(previous_hash)
        except (TypeError, ValueError, msgspec.EncodeError):
            expected = None  # a field of the wrong type: edited with an outside tool
        if expected != row.hash:
            return ChainReport(
                False, count, previous_position, previous_hash, row.position,
                "hash does not match: the row was edited, or rows were reordered",
            )  # fmt: skip
        previous_hash = row.hash
        previous_position = row.position
        count += 1
        if progress is not None and count % 10_000 == 0:
            progress(count)
    if to_position is not None:
        if previous_position < to_position:
            return ChainReport(
                False, count, previous_position, previous_hash, previous_position + 1,
                f"positions {previous_position + 1}..{to_position} are missing (deleted rows)",
            )  # fmt: skip
        return ChainReport(True, count, previous_position, previous_hash)
    high_water = await store.sequence_high_water()
    if high_water > previous_position:
        return ChainReport(
            False, count, previous_position, previous_hash, previous_position + 1,
            f"positions {previous_position + 1}..{high_water} are missing (deleted rows)",
        )  # fmt: skip
    return ChainReport(True, count, previous_position, previous_hash)


async def export_jsonl(
    store: EventLog,
    out: BinaryIO,
    *,
    from_position: int = 1,
    to_position: int | None = None,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
) -> int:
    """Write events in [from_position, to_position] and [since, until) to `out`,
    one JSON object a line; return how many were written."""
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    count = 0
    async for row in iter_log_rows(
        store, after=from_position - 1, to_position=to_position, since=since, until=until
    ):
        encoder.encode_into(ArchivedEvent.of(row), buffer, -1)
        buffer.extend(b"\n")
        count += 1
        if len(buffer) > 1 << 20:
            out.write(buffer)
            buffer.clear()
        if progress is not None and count % 10_000 == 0:
            progress(count)
    out.write(buffer)
    out.flush()
    return count
