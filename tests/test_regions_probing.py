"""Regions, the probing side: `[instance] region` and `--region`, a provider's `regions`,
events tagged with the region, the User-Agent, the rate-limit share, and the region
events (`RegionJoined`, `RegionLost`): in one process on SQLite, and with three
instances of the real service in two regions on one PostgreSQL log.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from standins import StandIn
from test_service import free_port, wait_listening

from cryptomon import __version__
from cryptomon.cli import build_parser
from cryptomon.config import BodyError, ConfigError, check_provider_body, load_config
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import (
    ProbeRecorded,
    ProviderRegistered,
    RateLimitChanged,
    RegionJoined,
    RegionLost,
)
from cryptomon.http.reload import needs_restart
from cryptomon.http.settings import Settings
from cryptomon.probing.leases import provider_key, region_key
from cryptomon.probing.monitor import Monitor
from cryptomon.probing.probes import USER_AGENT, create_probe_session, user_agent
from cryptomon.probing.ratelimit import RateLimitTracker
from cryptomon.probing.regions import RegionWatch, region_stream

DEADLINE_S = 30.0
NOW = 1_800_000_000.0


def provider(name: str, extra: str = "", *, base_url: str = "https://api.example.com") -> str:
    return (
        f'[[providers]]\nname = "{name}"\ncategory = "market_data"\nbase_url = "{base_url}"\n'
        f'health_path = "/ping"\ninterval = "30s"\n{extra}'
    )


def errors_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "regions.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [error.removeprefix(f"{path}: ") for error in caught.value.errors]


# --- configuration --------------------------------------------------------------


def test_an_instance_region_and_a_providers_regions_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        '[instance]\nregion = "eu-west"\n' + provider("A", 'regions = ["eu-west", "us-1"]\n')
    )
    config = load_config(path)
    assert config.instance.region == "eu-west"
    [loaded] = config.providers
    assert loaded.regions == ("eu-west", "us-1")
    assert loaded.probed_in("eu-west") and not loaded.probed_in("ap") and loaded.probed_in(None)
    # Without either, nothing changes: no region, every provider probed everywhere.
    path.write_text(provider("B"))
    plain = load_config(path)
    assert plain.instance.region is None and plain.providers[0].regions == ()
    assert plain.providers[0].probed_in("anywhere")


@pytest.mark.parametrize("bad", ["EU", "-eu", "eu_west", "", "a" * 33, "eu west"])
def test_a_region_name_that_is_not_one_is_refused(tmp_path: Path, bad: str) -> None:
    [error] = errors_for(tmp_path, f'[instance]\nregion = "{bad}"\n' + provider("A"))
    assert error.startswith("instance.region: "), error
    assert "is not a region name" in error and "eu-west" in error


def test_an_instance_name_names_its_snapshot_rows(tmp_path: Path) -> None:
    path = tmp_path / "named.toml"
    path.write_text('[instance]\nname = "eu-west-1"\n' + provider("A"))
    assert Settings.from_config(load_config(path)).snapshot_owner == "eu-west-1"
    path.write_text(provider("A"))
    unnamed = Settings.from_config(load_config(path), port=7861)
    assert unnamed.snapshot_owner == f"{socket.gethostname()}:7861"
    [error] = errors_for(tmp_path, '[instance]\nname = "two words"\n' + provider("A"))
    assert error.startswith("instance.name: ") and "is not an instance name" in error


def test_a_providers_regions_are_checked_one_by_one_and_duplicates_refused(
    tmp_path: Path,
) -> None:
    errors = errors_for(
        tmp_path,
        provider("A", 'regions = ["a", "Nope"]\n')
        + provider("B", 'regions = ["a", "b", "a"]\n')
        + provider("C", 'regions = "a"\n'),
    )
    assert errors[0].startswith("providers[0].regions[1] (provider 'A'): 'Nope' is not a region")
    assert (
        errors[1] == "providers[1].regions[2] (provider 'B'): duplicate region: [0] names 'a' too"
    )
    assert errors[2].startswith("providers[2].regions (provider 'C'): Expected `array`")
    assert len(errors) == 3


def test_regions_whose_probes_exceed_the_rate_limit_are_a_config_error(tmp_path: Path) -> None:
    # 3 regions, every 10 s: 6 probes a minute each, 18 on the key, over its 15.
    over = (
        'interval = "10s"\nregions = ["a", "b", "c"]\nrate_limit = { requests = 15, per = "1m" }\n'
    )
    [error] = errors_for(tmp_path, provider("A", over).replace('interval = "30s"\n', ""))
    assert error == (
        "providers[0].regions (provider 'A'): 3 regions probing every 10s send up to 18"
        " requests per 1m on one key (6 each), over rate_limit's 15: name fewer regions,"
        " probe less often, or raise rate_limit.requests"
    )
    # Two regions fit (12 of 15), and so does any number of unnamed ones (none is known
    # yet; the trackers share the limit as the regions come).
    path = tmp_path / "fits.toml"
    path.write_text(
        provider("A", over.replace('"a", "b", "c"', '"a", "b"')).replace('interval = "30s"\n', "")
    )
    assert load_config(path).providers[0].regions == ("a", "b")
    path.write_text(provider("A", 'rate_limit = { requests = 1, per = "1h" }\n'))
    assert load_config(path).providers[0].regions == ()


def test_the_api_takes_regions_as_the_file_does() -> None:
    body: dict[str, Any] = {
        "name": "Api",
        "category": "news",
        "base_url": "https://api.example.com",
        "interval": "1m",
        "regions": ["eu-west"],
    }
    assert check_provider_body(body).regions == ("eu-west",)
    with pytest.raises(BodyError) as caught:
        check_provider_body({**body, "regions": ["eu-west", "eu-west"]})
    assert caught.value.field == "regions[1]" and "duplicate region" in caught.value.problem


def test_region_flag_wins_over_the_file_and_a_reload_does_not_move_the_instance(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[instance]\nregion = "file-region"\n' + provider("A"))
    config = load_config(path)
    args = build_parser().parse_args(["serve", "--config", str(path), "--region", "flag-1"])
    assert Settings.from_config(config, region=args.region).region == "flag-1"
    assert Settings.from_config(config).region == "file-region"
    path.write_text('[instance]\nregion = "elsewhere"\n' + provider("A"))
    assert needs_restart(config, load_config(path)) == ["instance.region"]


def test_a_bad_region_flag_is_refused_by_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["serve", "--region", "Eu_West"])
    assert caught.value.code == 2
    assert "--region: 'Eu_West' is not a region name" in capsys.readouterr().err


# --- leases and the User-Agent ------------------------------------------------------


def test_lock_keys_carry_the_region_and_stay_as_they_were_without_one() -> None:
    assert provider_key("CoinGecko") == zlib.crc32(b"CoinGecko") - (1 << 31)
    assert provider_key("CoinGecko", "eu") == zlib.crc32(b"eu\0CoinGecko") - (1 << 31)
    assert provider_key("CoinGecko", "eu") != provider_key("CoinGecko", "us")
    assert region_key("eu") == zlib.crc32(b"eu") - (1 << 31)
    assert user_agent() == USER_AGENT == f"cryptomon/{__version__}"
    assert user_agent("eu-west") == f"cryptomon/{__version__} (region eu-west)"


# --- the rate-limit share ---------------------------------------------------------


def test_a_tracker_with_a_region_budgets_its_share_of_the_limit() -> None:
    tracker = RateLimitTracker("Shared", 30, 60, region="eu", regions=3)
    assert tracker.limit == 10
    changes = [tracker.record_request(NOW + i) for i in range(5)]
    [half] = [c for c in changes if c is not None]
    assert (half.used, half.limit, half.percentage, half.region) == (5, 10, 50.0, "eu")
    # One region fewer: a bigger share; usage is measured against it from the next request.
    tracker.share(2)
    assert tracker.limit == 15
    # The provider's own figure counts the whole key: this region's share of it.
    [*_, last] = tracker.observe_response(
        200, {"x-ratelimit-limit": "30", "x-ratelimit-remaining": "6"}, NOW + 6
    )
    assert (last.used, last.limit, last.percentage, last.region) == (12, 15, 80.0, "eu")
    # Without a region: the whole limit, and no region in the event.
    alone = RateLimitTracker("Shared", 30, 60)
    [*_, full] = [alone.record_request(NOW + i) for i in range(15)]
    assert full is not None and (full.used, full.limit, full.region) == (15, 30, None)
    assert b"region" not in msgspec.json.encode(full)


# --- one process on SQLite ----------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = await EventStore.open(tmp_path / "regions.db")
    yield opened
    await opened.close()


def write_config(path: Path, standin: StandIn, region: str | None = None) -> Path:
    base = standin.url("")
    path.write_text(
        (f'[instance]\nregion = "{region}"\n' if region else "")
        + f"""
[[providers]]
name = "Everywhere"
category = "market_data"
base_url = "{base}"
health_path = "/healthy"
interval = "30s"
rate_limit = {{ requests = 4, per = "60s" }}

[[providers]]
name = "OnlyB"
category = "news"
base_url = "{base}"
health_path = "/healthy"
interval = "30s"
regions = ["b"]
"""
    )
    return path


async def test_without_a_region_events_are_encoded_as_before(
    tmp_path: Path, standin: StandIn, store: EventStore
) -> None:
    config = load_config(write_config(tmp_path / "c.toml", standin))
    session = create_probe_session()
    monitor = Monitor(config, store, session, environ={})
    try:
        await monitor.register_providers()
        for _ in range(2):  # 2 of 4: 50 %, a RateLimitChanged
            await monitor.trigger("health_checks", actor="test")
    finally:
        await monitor.stop()
        await session.close()
    assert standin.last_headers["User-Agent"] == USER_AGENT
    rows = [row async for row in store.iter_rows()]
    kinds = {row.type for row in rows}
    assert {"ProviderRegistered", "ProbeRecorded", "RateLimitChanged"} <= kinds, kinds
    # omit_defaults: no region, and no regions where the file names none: the bytes
    # today's encoders wrote. (OnlyB's registration says the regions its file names.)
    for row in rows:
        if row.stream != "config:OnlyB":
            assert b'"region' not in row.payload, row
    probes = [r.decode().event for r in rows if r.type == "ProbeRecorded"]
    assert {p.provider for p in probes if isinstance(p, ProbeRecorded)} == {"Everywhere", "OnlyB"}
    assert not any(row.type.startswith("Region") for row in rows)


async def test_an_instance_with_a_region_tags_its_events_and_probes_its_regions_only(
    tmp_path: Path, standin: StandIn, store: EventStore
) -> None:
    config = load_config(write_config(tmp_path / "c.toml", standin, "a"))
    session = create_probe_session(region="a")
    monitor = Monitor(config, store, session, environ={}, region="a")
    monitor.set_live_regions(2)  # as the leases would say: a share of 2 of the 4
    try:
        await monitor.register_providers()
        assert [p.name for p in monitor.probed] == ["Everywhere"]  # OnlyB is b's
        await monitor.trigger("health_checks", actor="test")
    finally:
        await monitor.stop()
        await session.close()
    assert standin.last_headers["User-Agent"] == f"cryptomon/{__version__} (region a)"
    events = [r.event for r in await store.read_all(limit=1000)]
    registered = {e.provider: e for e in events if isinstance(e, ProviderRegistered)}
    assert registered["OnlyB"].regions == ("b",) and registered["Everywhere"].regions == ()
    [probe] = [e for e in events if isinstance(e, ProbeRecorded)]
    assert (probe.provider, probe.region) == ("Everywhere", "a")
    [change] = [e for e in events if isinstance(e, RateLimitChanged)]
    assert (change.region, change.used, change.limit, change.percentage) == ("a", 1, 2, 50.0)


async def test_a_region_joins_once_and_on_sqlite_another_region_is_lost_at_start(
    store: EventStore,
) -> None:
    first = RegionWatch(store, region="a", instance="one")
    await first.start()
    again = RegionWatch(store, region="a", instance="two")
    await again.start()  # the stream ends with a RegionJoined already
    [joined] = await store.read_stream(region_stream("a"))
    assert isinstance(joined.event, RegionJoined)
    assert (joined.event.region, joined.event.instance) == ("a", "one")
    # One process writes a SQLite log: region a's instance is not running when b's starts.
    other = RegionWatch(store, region="b", instance="three", clock=lambda: NOW)
    await other.start()
    events = [r.event for r in await store.read_stream(region_stream("a"))]
    assert events[1:] == [RegionLost("a", "three", NOW)]
    [b_joined] = await store.read_stream(region_stream("b"))
    assert b_joined.event == RegionJoined("b", "three", NOW)
    assert b_joined.metadata.actor == "regions@three"


def test_serve_region_on_sqlite_records_the_join_and_names_the_region(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[instance]\nregion = "from-file"\n' + provider("A", "enabled = false\n"))
    database = tmp_path / "s.db"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cryptomon", "serve", "--config", str(config), "--db",
         str(database), "--port", str(port), "--region", "from-flag"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        output = wait_listening(process)
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE_S)
        assert process.stdout is not None
        process.stdout.close()
    assert "  region: from-flag\n" in output, output

    async def joined() -> list[object]:
        async with await EventStore.open(database, readonly=True) as log:
            return [r.event.region for r in await log.read_by_type(["RegionJoined"])]  # type: ignore[union-attr]

    assert asyncio.run(joined()) == ["from-flag"]


# --- three instances in two regions on one PostgreSQL log ---------------------------

INTERVAL_S = 1.0
# Region a's two instances divide these; region b's one probes them all (but OnlyA).
EVERYWHERE = [f"P{n}" for n in range(6)]


class Instance:
    def __init__(self, config: Path, region: str) -> None:
        self.config, self.region = config, region
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
             "--port", str(self.port), "--region", region],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def shared_config(tmp_path: Path, standin: StandIn, postgres_url: str) -> Path:
    base = standin.url("")
    config = tmp_path / "shared.toml"
    config.write_text(
        f'[storage]\nurl = "{postgres_url}"\n'
        + "".join(
            provider(name, f'interval = "{INTERVAL_S:g}s"\n', base_url=base)
            .replace('interval = "30s"\n', "")
            .replace("/ping", "/healthy")
            for name in EVERYWHERE
        )
        # Down from b, up from a: the stand-in answers by the User-Agent's region.
        + provider("Split", f'interval = "{INTERVAL_S:g}s"\n', base_url=base)
        .replace('interval = "30s"\n', "")
        .replace("/ping", "/regional/a")
        + provider("OnlyA", f'interval = "{INTERVAL_S:g}s"\nregions = ["a"]\n', base_url=base)
        .replace('interval = "30s"\n', "")
        .replace("/ping", "/healthy")
        # 8 a minute on one key, probed from two regions: 4 each.
        + provider(
            "Quota",
            f'interval = "{INTERVAL_S:g}s"\nrate_limit = {{ requests = 8, per = "60s" }}\n',
            base_url=base,
        )
        .replace('interval = "30s"\n', "")
        .replace("/ping", "/healthy")
    )
    return config


@pytest.fixture
def started(shared_config: Path) -> Iterator[list[Instance]]:
    running: list[Instance] = []
    try:
        # Region a's two start together: they must record its RegionJoined once.
        for region in ("a", "a", "b"):
            running.append(Instance(shared_config, region))
        for instance in running:
            wait_listening(instance.process)
        yield running
    finally:
        for instance in running:
            instance.close()


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def probes_since(url: str, since: float) -> dict[tuple[str, str | None], set[str]]:
    """(provider, region) -> the instances that probed it, of probes started after `since`."""
    seen: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for row in await fetch(
        url, "SELECT payload, actor FROM events WHERE type = 'ProbeRecorded' ORDER BY position"
    ):
        probe = msgspec.json.decode(row["payload"], type=ProbeRecorded)
        if probe.started_at > since:
            seen[probe.provider, probe.region].add(row["actor"])
    return seen


async def region_events(url: str, region: str) -> list[RegionJoined | RegionLost]:
    rows = await fetch(
        url, "SELECT type, payload FROM events WHERE stream = $1 ORDER BY version",
        region_stream(region),
    )  # fmt: skip
    types = {"RegionJoined": RegionJoined, "RegionLost": RegionLost}
    return [msgspec.json.decode(r["payload"], type=types[r["type"]]) for r in rows]


async def until(check: Callable[[], Awaitable[object]], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)  # a poll interval, not a wait for something to happen
    return found


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, (url, response.status)
        return await response.json()


async def held_by_region(instances: list[Instance]) -> dict[str, int]:
    held: dict[str, int] = defaultdict(int)
    async with aiohttp.ClientSession() as session:
        for instance in instances:
            async with session.get(instance.url + "/health") as response:
                body = await response.json()
            held[instance.region] += body["components"]["scheduler"]["providers_probed"]
    return held


async def test_three_instances_in_two_regions_probe_everything_in_each_region(
    started: list[Instance], postgres_url: str
) -> None:
    only_b = started[2]
    in_a = [*EVERYWHERE, "Split", "OnlyA", "Quota"]
    in_b = [*EVERYWHERE, "Split", "Quota"]

    async def divided() -> bool:
        held = await held_by_region(started)
        return held == {"a": len(in_a), "b": len(in_b)}

    await until(divided, "each region's providers held once in that region")
    since = time.time() + INTERVAL_S  # past probes started before the division settled
    wanted = {(name, "a") for name in in_a} | {(name, "b") for name in in_b}

    async def everything_probed() -> dict[tuple[str, str | None], set[str]]:
        seen = await probes_since(postgres_url, since)
        return seen if wanted <= set(seen) else {}

    seen = await until(everything_probed, "every provider probed in each of its regions")
    assert set(seen) == wanted, set(seen) - wanted  # OnlyA never from b; no probe without one
    assert all(len(actors) == 1 for actors in seen.values()), seen  # one instance a region
    assert len(set().union(*(seen[name, "b"] for name in in_b))) == 1
    rows = await fetch(postgres_url, "SELECT payload FROM events WHERE type = 'ProbeRecorded'")
    probes = [msgspec.json.decode(r["payload"], type=ProbeRecorded) for r in rows]
    outcomes = {(p.region, p.outcome) for p in probes if p.provider == "Split"}
    assert ("a", "success") in outcomes and ("b", "failed") in outcomes, outcomes
    assert ("a", "failed") not in outcomes and ("b", "success") not in outcomes, outcomes
    # Down from b only: regional degraded, not offline, on every instance's read models.
    observer = started[0]

    async def split_is(status: str) -> dict[str, Any]:
        body = await get_json(observer.url + "/api/providers/Split")
        return body if body["status"] == status else {}

    await until(lambda: split_is("degraded"), "Split degraded (down from b only)")
    [degraded] = [
        a for a in (await get_json(observer.url + "/api/alerts?provider=Split"))["alerts"]
        if a["kind"] == "degraded" and a["resolved_at"] is None
    ]  # fmt: skip
    assert degraded["regions"] == ["b"] and "regional" in degraded["message"], degraded

    # Region b's only instance dies: exactly one survivor records RegionLost; a goes on.
    only_b.process.kill()
    only_b.process.wait()
    killed_at = time.time()

    async def lost() -> bool:
        return [type(e) for e in await region_events(postgres_url, "b")] == [
            RegionJoined,
            RegionLost,
        ]

    await until(lost, "RegionLost for b")
    [_, loss] = await region_events(postgres_url, "b")
    assert isinstance(loss, RegionLost) and loss.lost_at >= killed_at - 1
    # Recorded by a survivor of region a, named with its lease lock.
    assert any(f":{a.process.pid}#pg" in loss.instance for a in started[:2]), loss

    async def a_goes_on() -> bool:
        seen = await probes_since(postgres_url, killed_at + INTERVAL_S)
        return {(name, "a") for name in in_a} <= set(seen)

    await until(a_goes_on, "region a probing on after b is gone")
    # b's view is unknown, not offline: only a reports, and sees Split online. The
    # service's own alert says b stopped reporting.
    split = await until(lambda: split_is("online"), "Split online once b stopped reporting")
    assert (split["regions"]["b"]["status"], split["regions"]["b"]["lost"]) == ("unknown", True)
    assert split["regions"]["a"]["status"] == "online" and split["status_regions"] == ["a"]

    async def region_alert() -> list[dict[str, Any]]:
        alerts = (await get_json(observer.url + "/api/alerts"))["alerts"]
        return [a for a in alerts if a["kind"] == "region_lost"]

    [raised] = await until(region_alert, "the region_lost alert")
    assert (raised["provider"], raised["regions"], raised["severity"]) == (None, ["b"], "critical")
    assert raised["resolved_at"] is None

    # It comes back: RegionJoined again, and b probes again, its share of Quota's 8 at 4.
    back = Instance(only_b.config, "b")
    started.append(back)
    wait_listening(back.process)
    back_at = time.time()

    async def rejoined() -> bool:
        events = await region_events(postgres_url, "b")
        return [type(e) for e in events] == [RegionJoined, RegionLost, RegionJoined]

    await until(rejoined, "RegionJoined for b again")

    async def region_alert_resolved() -> bool:
        return all(a["resolved_at"] is not None for a in await region_alert())

    await until(region_alert_resolved, "the region_lost alert resolved by b's return")

    async def b_quota() -> list[RateLimitChanged]:
        rows = await fetch(
            postgres_url, "SELECT payload FROM events WHERE type = 'RateLimitChanged'"
        )
        changes = [msgspec.json.decode(r["payload"], type=RateLimitChanged) for r in rows]
        return [c for c in changes if c.region == "b" and c.observed_at > back_at]

    [*_, share] = await until(b_quota, "a RateLimitChanged of b's share of Quota")
    assert (share.provider, share.limit) == ("Quota", 4), share

    # Region a started twice at once and joined once; b lost once, back once (read before
    # the shutdown below: stopping a region's last instance is a loss the other records).
    assert [type(e) for e in await region_events(postgres_url, "a")] == [RegionJoined]
    assert [type(e) for e in await region_events(postgres_url, "b")] == [
        RegionJoined,
        RegionLost,
        RegionJoined,
    ]
    for instance in started:
        if instance.process.poll() is None:
            instance.process.terminate()
            assert instance.process.wait(timeout=DEADLINE_S) == 0
    # Every rate-limit event says its region; no probe is without one.
    [untagged] = await fetch(
        postgres_url,
        "SELECT count(*) FROM events WHERE type IN ('ProbeRecorded', 'RateLimitChanged')"
        " AND convert_from(payload, 'UTF8')::jsonb ->> 'region' IS NULL",
    )
    assert untagged[0] == 0
    positions = [r[0] for r in await fetch(postgres_url, "SELECT position FROM events ORDER BY 1")]
    assert positions == list(range(1, len(positions) + 1))
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", "verify", "--db", postgres_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(verify.communicate(), timeout=120)
    assert verify.returncode == 0, output.decode()
