"""`/api/audit/verify`: the hash chain as the running check knows it, and a fresh walk.

GET answers from the read models' chain check (`ChainCheck`, which follows the head):
no walk per request, so no reader can spend the service's CPU on it. POST walks the
whole chain again, a write-level request (the token when one is configured, loopback
otherwise). The walk runs in a child process, the CLI's own `verify --json` on the same
database, so its seconds of hashing stay off the event loop; one runs at a time, and a
POST while one runs waits for that walk's result. What it finds becomes the check's
state: a break makes /health 503.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import msgspec
from aiohttp import web

from cryptomon.events.audit import ChainReport
from cryptomon.events.log import StoreError, is_postgres_url
from cryptomon.http.keys import READ_MODELS, SETTINGS, STORE
from cryptomon.http.schemas import ChainStatus
from cryptomon.http.views import respond
from cryptomon.isotime import iso_time

# The variable the child reads a PostgreSQL URL from (`verify --db-env`): a URL may
# carry a password, and a process's arguments are visible to every user (`ps`).
DATABASE_ENV = "CRYPTOMON_VERIFY_DATABASE"


class WalkFailed(StoreError):
    """The fresh walk could not run or did not answer (a 503, like storage failures)."""


def verify_command(database: Path | str, archive: Path | None) -> tuple[list[str], dict[str, str]]:
    """The child's arguments and environment for a walk of `database` and its `archive`
    (the store's: the child reads no config)."""
    command = [sys.executable, "-m", "cryptomon", "verify", "--json"]
    if archive is not None:
        command += ["--archive-dir", str(archive)]
    environ = dict(os.environ)
    if is_postgres_url(database):
        environ[DATABASE_ENV] = str(database)
        command += ["--db-env", DATABASE_ENV]
    else:
        command += ["--db", str(database)]
    return command, environ


async def walk_in_child(database: Path | str, archive: Path | None) -> ChainReport:
    """Run `python -m cryptomon verify --json` on `database`; its report. Killed if
    this process stops waiting for it (the service stops)."""
    command, environ = verify_command(database, archive)
    try:
        child = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environ,
        )
    except OSError as exc:
        raise WalkFailed(f"the verify process did not start: {exc}") from None
    try:
        out, err = await child.communicate()
    except BaseException:
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    if child.returncode in (0, 1):  # intact, broken
        try:
            return msgspec.json.decode(out, type=ChainReport)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    # The CLI masks a URL's password in what it prints.
    last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
    raise WalkFailed(f"the verify process exited with code {child.returncode}: {last[0]}")


def _status(request: web.Request) -> ChainStatus:
    chain = request.app[READ_MODELS].chain
    return ChainStatus(
        ok=chain.state == "intact",
        status=chain.state,
        count=chain.position,  # gap-free positions: events 1..position
        last_position=chain.position,
        last_hash=chain.hash,
        head=request.app[STORE].head,
        verified_at=iso_time(chain.verified_at),
        broken_at=chain.broken_at,
        reason=chain.reason,
        walking=chain.walking,
        full_walk_at=iso_time(chain.full_walk_at),
    )


async def audit_verify(request: web.Request) -> web.Response:
    return respond(_status(request))


async def audit_verify_afresh(request: web.Request) -> web.Response:
    database, archive = request.app[SETTINGS].database, request.app[STORE].archive
    await request.app[READ_MODELS].chain.walk_afresh(lambda: walk_in_child(database, archive))
    return respond(_status(request))
