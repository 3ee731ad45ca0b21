"""`python -m cryptomon`: the command line.

With no subcommand it serves (`serve`). The others: `check-config` validates a
config file and lists what it would probe; `replay` rebuilds the read models
and compares them with the live state; `verify` walks the hash chain;
`export` writes a range of the log as JSON Lines; `copy-log` copies a SQLite
log into PostgreSQL with its hash chain intact; `report` writes a month's uptime
report (SLA) as CSV or JSON; `notify-test` sends a test
message to one notification channel. Every subcommand takes `--config PATH`
and `--db PATH` (a SQLite file or a postgresql:// URL; the flag wins over the
file).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec

from cryptomon.cli.logformat import LOG_FORMATS, configure_logging
from cryptomon.config import (
    Config,
    ConfigError,
    check_region,
    describe_checks,
    describe_providers,
    load_config,
)
from cryptomon.events.archive import hash_at
from cryptomon.events.audit import ChainReport, export_jsonl, verify_chain
from cryptomon.events.log import (
    EventLog,
    StoredRow,
    StoreError,
    is_postgres_url,
    mask_url,
    open_event_log,
)
from cryptomon.events.migrations import SchemaError
from cryptomon.events.types import EventDecodeError
from cryptomon.http.views.reports import month_days, report_csv, uptime_report
from cryptomon.projections import MAX_DIFFERENCES, Projections
from cryptomon.readmodels import fold_log, load_projections, projection_settings

COPY_BATCH = 5000


class ProgressLine:
    """A progress counter on stderr, shown only when stderr is a terminal."""

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty()
        self._shown_at = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._shown_at < 0.2:
            return
        self._shown_at = now
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        self.stream.write(f"\r{self.label} {done:,}/{self.total:,}{share}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC when no offset is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-25T10:00:00Z) or unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def region_name(text: str) -> str:
    try:
        return check_region(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def database_path(args: argparse.Namespace, config: Config) -> Path | str:
    """The event log to open: `--db`, or the variable `--db-env` names, else the
    config's storage.url or storage.database."""
    text: str | None = args.db
    if args.db_env is not None:
        if text is not None:
            raise ConfigError(["give --db or --db-env, not both"])
        text = os.environ.get(args.db_env) or None
        if text is None:
            raise ConfigError([f"--db-env names {args.db_env}, which is not set"])
    if text is None:
        text = config.storage.target
    return text if is_postgres_url(text) else Path(text)


async def open_log(args: argparse.Namespace, config: Config) -> EventLog:
    """The log `database_path` names, read-only, with its archive segments: in
    `--archive-dir`, else the config's storage.archive_dir, else beside a SQLite file."""
    archive = args.archive_dir if args.archive_dir is not None else config.storage.archive_path
    return await open_event_log(database_path(args, config), readonly=True, archive=archive)


async def run_check_config(args: argparse.Namespace) -> int:
    path = args.path or args.config
    config = load_config(path)
    print(f"{config.source}: OK, {len(config.providers)} providers")
    lines = describe_providers(config, os.environ)
    for provider, line in zip(config.providers, lines, strict=True):
        print(line)
        for check in describe_checks(provider):
            print(check)
    if not args.live:
        return 0
    from cryptomon.probing.livecheck import check_live

    print()
    return await check_live(config, os.environ, sys.stdout)


def is_loopback(host: str) -> bool:
    """Whether listening on `host` reaches this machine alone: `localhost` or a loopback
    address. Any other name, `0.0.0.0`, `::` or an empty host reaches beyond it."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    """Run the service until SIGINT or SIGTERM; exit 0 after a clean shutdown."""
    from aiohttp import web

    from cryptomon.cli.demo import DEFAULT_DATABASE as DEMO_DATABASE
    from cryptomon.cli.demo import SimulatedProviders
    from cryptomon.cli.demo import banner as demo_banner
    from cryptomon.http.settings import Settings
    from cryptomon.service.app import create_app, reload_on_hangup

    configure_logging(args.log_format)
    demo: SimulatedProviders | None = None
    demo_lines: list[str] = []
    if args.demo:
        if args.config is not None:
            raise ConfigError(["--demo writes its own config: leave out --config"])
        demo = SimulatedProviders()
        try:
            demo_config = demo.write_config(Path(args.db) if args.db else DEMO_DATABASE)
        except (FileExistsError, OSError) as exc:
            demo.close()
            raise ConfigError([str(exc)]) from None
        demo_lines = demo_banner(demo, demo_config)
        config = load_config(demo_config)
    else:
        config = load_config(args.config)
    settings = Settings.from_config(
        config,
        database=database_path(args, config),
        host=args.host,
        port=args.port,
        region=args.region,
        environ=os.environ,
        # No --config: the bundled catalogue, read again by a reload like any file.
        config_path=demo_config if demo is not None else args.config or Path(config.source),
    )
    skipped = [
        (p.name, reason)
        for p in config.providers
        if (reason := p.skip_reason(os.environ)) is not None
    ]
    monitored = len(config.providers) - len(skipped)
    base = f"http://{settings.host}:{settings.port}"

    def announce(_text: str) -> None:
        for line in demo_lines:
            print(line)
        print(f"cryptomon listening on {base}", flush=True)
        print(f"  dashboard: {base}/   API docs: {base}/docs   live feed: {base}/ws/live")
        print(f"  database: {settings.database_location}")
        print(f"  config: {config.source}")
        if settings.region is not None:
            print(f"  region: {settings.region}")
        if settings.read_token is None and not is_loopback(settings.host):
            print(
                f"  warning: listening beyond loopback ({settings.host}) with reads open:"
                " anyone who reaches this port reads /api/* and the live feed (hosts, error"
                " messages); set [server] read_token_env to require a read token"
            )
        print(f"  monitoring {monitored} providers, skipping {len(skipped)}")
        for name, reason in skipped:
            print(f"    {name}: {reason}")
        sys.stdout.flush()

    app = create_app(settings)
    app.cleanup_ctx.append(reload_on_hangup)
    if demo is not None:
        # First in, last out: the simulated providers outlive the probing of them.
        app.cleanup_ctx.insert(0, demo.cleanup_ctx)
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=announce,
            shutdown_timeout=10.0,
            access_log=None,
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(
            f"error: cannot listen on {settings.host}:{settings.port}: the address is in use "
            "(another cryptomon?); pick another with --port",
            file=sys.stderr,
        )
        return 2
    finally:
        if demo is not None:
            demo.close()
    return 0


async def run_verify(args: argparse.Namespace) -> int:
    if (args.position is None) != (args.hash is None):
        print("error: --position and --hash go together", file=sys.stderr)
        return 2
    if args.hash is not None and not re.fullmatch(r"[0-9a-f]{64}", args.hash):
        print("error: --hash: expected 64 hex digits, as a report gives it", file=sys.stderr)
        return 2
    config = load_config(args.config)
    async with await open_log(args, config) as store:
        head = store.head
        to_position = None if args.position is None else min(args.position, head)
        progress = ProgressLine("verifying", to_position or head)
        report = await verify_chain(store, progress, to_position=to_position)
        progress.finish()
    if args.position is not None:
        return _check_position(args, report, head)
    if args.json:
        print(msgspec.json.encode(report).decode())
        return 0 if report.ok else 1
    if report.ok:
        print(f"OK: {report.count} events, chain intact, last hash {report.last_hash}")
        return 0
    print(
        f"BROKEN at position {report.broken_at}: {report.reason} "
        f"({report.count} events verified before it)"
    )
    return 1


def _check_position(args: argparse.Namespace, report: ChainReport, head: int) -> int:
    """`verify --position N --hash H`: whether the log holds position N with hash H, its
    chain intact up to there (what a report computed at N names)."""
    position, wanted = args.position, args.hash
    if not report.ok:
        verdict = f"BROKEN at position {report.broken_at}: {report.reason}"
    elif report.last_position < position:
        verdict = f"MISSING: the log ends at position {head}, before {position}"
    elif report.last_hash != wanted:
        verdict = f"DIFFERENT: position {position} has hash {report.last_hash}, not {wanted}"
    else:
        verdict = f"OK: position {position} has hash {wanted}; the chain is intact up to it"
    ok = verdict.startswith("OK")
    if args.json:
        found = report.last_hash if report.ok and report.last_position == position else None
        answer = {"ok": ok, "position": position, "hash": wanted, "found_hash": found}
        print(msgspec.json.encode({**answer, "verdict": verdict}).decode())
    else:
        print(verdict)
    return 0 if ok else 1


async def run_replay(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    settings = projection_settings(config)
    async with await open_log(args, config) as store:
        progress = ProgressLine("loading live state", store.head)
        live, report = await load_projections(store, settings, progress)
        progress.finish()
        rebuilt = Projections(settings)
        progress = ProgressLine("replaying", store.head)
        replayed = await fold_log(rebuilt, store, live.position, progress)
        progress.finish()
    if report.discarded is not None:
        print(f"note: the stored snapshot was not used: {report.discarded}")
    differences = rebuilt.state_equal(live)
    if differences:
        print(f"DIFFERENT: a replay of {replayed} events does not match the live state:")
        for difference in differences:
            print(f"  {difference}")
        if len(differences) == MAX_DIFFERENCES:
            print(f"  (listing stops at {MAX_DIFFERENCES} differences; there may be more)")
        return 1
    print(
        f"OK: replayed {replayed} events; every read model equals the live state "
        f"(snapshot at position {report.snapshot_position} + {report.tail_events} events)"
    )
    return 0


def month(text: str) -> tuple[int, int]:
    try:
        return month_days(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def run_report(args: argparse.Namespace) -> int:
    """`report --month YYYY-MM`: the uptime report `/api/reports/uptime` gives for that
    month, from the read models as of the log's head, or with `--until N` as a replay of
    the log up to position N builds them (the position a report names: the same numbers)."""
    config = load_config(args.config)
    settings = projection_settings(config)
    async with await open_log(args, config) as store:
        if args.until is None:
            progress = ProgressLine("loading the read models", store.head)
            projections, _ = await load_projections(store, settings, progress)
        else:
            if args.until > store.head:
                print(
                    f"error: --until {args.until}: the log ends at position {store.head}",
                    file=sys.stderr,
                )
                return 1
            projections = Projections(settings)
            progress = ProgressLine("replaying", args.until)
            await fold_log(projections, store, args.until, progress)
        progress.finish()
        position = projections.position
        chain_hash = await hash_at(store, position) if position else None
    if args.provider is not None and projections.providers.get(args.provider) is None:
        print(f"error: --provider: no provider named {args.provider!r} in the log", file=sys.stderr)
        return 1
    first_day, end_day = args.month
    report = uptime_report(projections, first_day, end_day, chain_hash, args.provider)
    if args.format == "csv":
        sys.stdout.write(report_csv(report))
    else:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return 0


async def run_export(args: argparse.Namespace) -> int:
    async with await open_log(args, load_config(args.config)) as store:
        progress = ProgressLine("exporting", store.head)
        count = await export_jsonl(
            store,
            sys.stdout.buffer,
            from_position=args.from_position,
            to_position=args.to_position,
            since=args.since,
            until=args.until,
            progress=progress,
        )
        progress.finish()
    print(f"exported {count} events", file=sys.stderr)
    return 0


async def run_copy_log(args: argparse.Namespace) -> int:
    """Copy a SQLite log (archive included) and its snapshots into an empty PostgreSQL
    database, row for row: same positions, ids and hashes. Then verify the copy."""
    from cryptomon.events.archive import iter_log_rows
    from cryptomon.events.postgres import PostgresEventStore

    config = load_config(args.config)
    source_path = database_path(args, config)
    if not isinstance(source_path, Path):
        raise StoreError("copy-log copies from a SQLite file: give it with --db PATH")
    if not is_postgres_url(args.to):
        raise StoreError("--to must be a postgresql:// URL")
    async with (
        await open_log(args, config) as source,
        await PostgresEventStore.open(args.to) as target,
    ):
        if target.head != 0:
            raise StoreError(
                f"{target.location} already holds {target.head} events: copy into an empty database"
            )
        progress = ProgressLine("copying", source.head)
        batch: list[StoredRow] = []
        copied = 0
        async for row in iter_log_rows(source):
            batch.append(row)
            if len(batch) == COPY_BATCH:
                await target.append_stored(batch)
                copied += len(batch)
                batch.clear()
                progress(copied)
        await target.append_stored(batch)
        copied += len(batch)
        progress.finish()
        snapshots = [s for s in (await source.load_snapshots()).values() if s.intact]
        for position in sorted({s.position for s in snapshots}):
            states = {s.name: (s.version, s.state) for s in snapshots if s.position == position}
            await target.save_snapshots(states, position)
        progress = ProgressLine("verifying", target.head)
        report = await verify_chain(target, progress)
        progress.finish()
    if not report.ok:
        print(f"BROKEN after the copy at position {report.broken_at}: {report.reason}")
        return 1
    print(
        f"OK: copied {copied} events and {len(snapshots)} snapshots to {mask_url(args.to)};"
        f" chain intact, last hash {report.last_hash}"
    )
    return 0


async def run_notify_test(args: argparse.Namespace) -> int:
    """Send a test message to one channel now; exit 1 when it fails, 2 for no such channel."""
    from cryptomon.notify import deliver, trial_notification
    from cryptomon.notify.delivery import create_session

    config = load_config(args.config)
    channel = next(
        (c for c in config.notifications if c.name.casefold() == args.channel.casefold()), None
    )
    if channel is None:
        known = ", ".join(c.name for c in config.notifications) or "none configured"
        print(
            f"error: {config.source} has no notification channel {args.channel!r}"
            f" (channels: {known})",
            file=sys.stderr,
        )
        return 2
    async with create_session() as session:
        note = trial_notification(channel.name, time.time())
        outcome = await deliver(session, channel, note, os.environ)
    if outcome.ok:
        print(f"{channel.name}: HTTP {outcome.status}, delivered")
        return 0
    print(f"{channel.name}: failed: {outcome.error}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cryptomon",
        description="Monitor the third-party APIs crypto products depend on.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: the bundled catalogue)",
    )
    common.add_argument(
        "--db",
        default=None,
        metavar="PATH|URL",
        help="database file, or a postgresql:// URL (default: data/cryptomon.db)",
    )
    common.add_argument(
        "--db-env",
        default=None,
        metavar="NAME",
        help="read --db from this environment variable instead (keeps a URL's password"
        " out of the process list)",
    )
    # The commands that read the log: its archive may be elsewhere than the file says.
    reading = argparse.ArgumentParser(add_help=False, parents=[common])
    reading.add_argument(
        "--archive-dir",
        type=lambda text: Path(text).absolute(),
        default=None,
        metavar="DIR",
        help="the archive segments' directory (default: the config's storage.archive_dir,"
        " or beside a SQLite file)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serving = commands.add_parser("serve", parents=[common], help="run the service (the default)")
    serving.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serving.add_argument("--port", type=port_number, default=None, help="port (default 7860)")
    serving.add_argument(
        "--region",
        type=region_name,
        default=None,
        help="the region this instance probes from (default: the config's [instance] region;"
        " none: no region)",
    )
    serving.add_argument(
        "--demo",
        action="store_true",
        help="monitor simulated providers on 127.0.0.1 (no network or keys needed); "
        "database data/demo.db unless --db",
    )
    serving.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines as readable text (default) or one JSON object a line",
    )
    serving.set_defaults(serve=True)
    check = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate a config file and list the providers it would monitor",
    )
    check.add_argument("path", nargs="?", type=Path, default=None, metavar="PATH")
    check.add_argument(
        "--live",
        action="store_true",
        help="also probe every provider once, now, and print what each answered; exit 1"
        " when an enabled provider fails",
    )
    check.set_defaults(run=run_check_config)
    verify = commands.add_parser(
        "verify", parents=[reading], help="check the hash chain of the whole log"
    )
    verify.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object (ok, count, last_position, last_hash,"
        " broken_at, reason); the exit code is the same",
    )
    verify.add_argument(
        "--position",
        type=int,
        metavar="N",
        help="with --hash: check that the log holds position N with hash H, its chain intact"
        " up to it (a report names both); exit 1 when it does not",
    )
    verify.add_argument("--hash", metavar="H", help="the hash --position must have")
    verify.set_defaults(run=run_verify)
    commands.add_parser(
        "replay",
        parents=[reading],
        help="rebuild every read model from the log and compare with the live state",
    ).set_defaults(run=run_replay)
    export = commands.add_parser(
        "export", parents=[reading], help="write a range of the log as JSON Lines to stdout"
    )
    export.add_argument("--from-position", type=positive_int, default=1, metavar="N")
    export.add_argument("--to-position", type=positive_int, default=None, metavar="M")
    export.add_argument("--since", type=parse_time, default=None, metavar="TIME")
    export.add_argument("--until", type=parse_time, default=None, metavar="TIME")
    export.set_defaults(run=run_export)
    report = commands.add_parser(
        "report",
        parents=[reading],
        help="write a month's uptime report (SLA) per provider to stdout, as CSV or JSON",
    )
    report.add_argument("--month", type=month, required=True, metavar="YYYY-MM")
    report.add_argument("--format", choices=("csv", "json"), default="csv")
    report.add_argument("--provider", default=None, metavar="NAME", help="only this provider")
    report.add_argument(
        "--until",
        type=positive_int,
        default=None,
        metavar="N",
        help="replay the log up to position N and report from there: a report naming"
        " position N gives the same numbers",
    )
    report.set_defaults(run=run_report)
    copy_log = commands.add_parser(
        "copy-log",
        parents=[reading],
        help="copy a SQLite log (--db) into an empty PostgreSQL database with its hash chain",
    )
    copy_log.add_argument("--to", required=True, metavar="URL", help="postgresql:// URL")
    copy_log.set_defaults(run=run_copy_log)
    notify_test = commands.add_parser(
        "notify-test", parents=[common], help="send a test message to one notification channel"
    )
    notify_test.add_argument("channel", metavar="CHANNEL", help="the channel's name")
    notify_test.set_defaults(run=run_notify_test)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    # No command (nothing, or only flags) means serve: `python -m cryptomon` runs the service.
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in ("-h", "--help")):
        arguments.insert(0, "serve")
    args = parser.parse_args(arguments)
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] | None = getattr(
        args, "run", None
    )
    try:
        if run is None:
            return serve(args)
        return asyncio.run(run(args))
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    except (StoreError, SchemaError, EventDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
