"""Maintenance windows: the config's `[[maintenance]]`, the folds (status, alerts, uptime,
replay equal to live), and the API through the real service with stand-in providers, in
this process and as users run it (a subprocess, notifying a webhook receiver)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from standins import StandIn
from test_notifications import Receiver, webhook
from test_projections import T0, Harness, probe, registration
from test_reload import get, until
from test_reload import serve as run_service

from cryptomon.config import CATEGORIES, ConfigError, MaintenanceConfig, load_config
from cryptomon.events.types import MaintenanceWindowCancelled, MaintenanceWindowScheduled
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.isotime import iso_time
from cryptomon.projections import (
    AlertRaised,
    MaintenanceChanged,
    Projections,
    ProjectionSettings,
    ProviderStatusChanged,
)
from cryptomon.service.app import create_app

Client = TestClient[web.Request, web.Application]
TOKEN = "maintenance-token-0123"


def one_off(window_id: str, start: float, end: float, **covers: Any) -> MaintenanceWindowScheduled:
    return MaintenanceWindowScheduled(
        window_id=window_id, name=window_id, source="api", start=start, end=end, **covers
    )


# ---- config ------------------------------------------------------------------------


def errors_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "cryptomon.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.errors


PROVIDER = """
[[providers]]
name = "A"
category = "exchanges"
base_url = "https://a.example"
interval = "30s"
"""


def test_config_windows_load_and_mistakes_name_their_key(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        PROVIDER
        + """
[[maintenance]]
name = "upgrade"
providers = ["A"]
start = 2030-01-01T02:00:00Z
end = "2030-01-01T03:00:00+00:30"

[[maintenance]]
name = "nightly"
categories = ["exchanges"]
cron = "0 3 * * *"
duration = "30m"
"""
    )
    config = load_config(path)
    assert [w.name for w in config.maintenance] == ["upgrade", "nightly"]
    assert config.maintenance[1].duration_seconds == 1800
    errors = errors_for(
        tmp_path,
        PROVIDER
        + """
[[maintenance]]
name = "naive"
providers = ["A"]
start = "2030-01-01T02:00:00"
end = "2030-01-01T03:00:00Z"

[[maintenance]]
name = "backwards"
providers = ["Ghost"]
start = "2030-01-01T03:00:00Z"
end = "2030-01-01T02:00:00Z"

[[maintenance]]
name = "both"
categories = ["exchanges"]
cron = "0 3 * * *"
duration = "soon"
start = "2030-01-01T03:00:00Z"

[[maintenance]]
name = "naive"
cron = "0 3 * * *"
duration = "1h"

[[maintenance]]
name = "beyond"
providers = ["A"]
start = "2030-01-01T00:00:00Z"
end = 9999-12-31T23:00:00-02:00

[[maintenance]]
name = "yearlong"
providers = ["A"]
cron = "0 3 * * *"
duration = "367d"
""",
    )
    joined = "\n".join(errors)
    assert "maintenance[0].start: '2030-01-01T02:00:00' has no UTC offset" in joined
    assert "maintenance[1].end: expected after start" in joined
    assert "maintenance[1].providers: 'Ghost' is not a configured provider" in joined
    assert "maintenance[2].duration: 'soon' is not a duration" in joined
    assert "maintenance[2].start: set cron and duration (recurring) or start and end" in joined
    assert "maintenance[3].name: duplicate window name: maintenance[0] already uses it" in joined
    # Past the year 9999 in UTC, or a recurring occurrence longer than a year: no view of
    # the window could write its end.
    assert "maintenance[4].end: '9999-12-31T23:00:00-02:00' is out of range" in joined
    assert "maintenance[5].duration: '367d' is too long for a recurring window" in joined
    assert all(error.startswith(str(tmp_path / "cryptomon.toml")) for error in errors)


# ---- the folds ---------------------------------------------------------------------


def test_a_window_makes_the_status_maintenance_raises_nothing_then_judges_afresh() -> None:
    fold = Harness()
    fold(registration("A"), one_off("w", T0 + 100, T0 + 400, providers=("A",)))
    assert fold(probe("A", T0, "success")) != []  # unknown -> online
    during = fold(*(probe("A", T0 + 100 + 30 * i, "failed") for i in range(10)))
    assert not [n for n in during if isinstance(n, AlertRaised)]
    entered = [n for n in during if isinstance(n, MaintenanceChanged)]
    assert [(n.window_id, n.active) for n in entered] == [("w", True)]
    [change] = [n for n in during if isinstance(n, ProviderStatusChanged)]
    assert change.new_status == "maintenance" and "'w'" in change.details
    state = fold.projections.providers.get("A")
    assert state is not None and state.window == "w" and state.status == "maintenance"
    assert fold.projections.alerts.query() == []
    # Left out of uptime: only the probe before the window counts.
    stats = fold.projections.metrics.window("A", T0 - 60, T0 + 500, "health")
    assert stats.count == 1
    # After it: the first failure is judged afresh (degraded, one alert), no burst.
    after = fold(probe("A", T0 + 400, "failed"))
    assert [(n.active) for n in after if isinstance(n, MaintenanceChanged)] == [False]
    raised = [n.alert.kind for n in after if isinstance(n, AlertRaised)]
    assert raised == ["degraded"]
    after += fold(probe("A", T0 + 430, "failed"), probe("A", T0 + 460, "failed"))
    kinds = [a.kind for a in fold.projections.alerts.query()]
    assert sorted(kinds) == ["degraded", "offline"]  # no failure_rate: the window fed none


def test_a_category_window_ending_for_many_providers_numbers_their_alerts_apart() -> None:
    fold = Harness()
    names = [f"P{i}" for i in range(5)]
    fold(*(registration(name) for name in names))
    fold(one_off("cat", T0, T0 + 300, categories=("market_data",)))
    fold(*(probe(name, T0 + 10, "failed") for name in names))
    assert fold.projections.alerts.query() == []
    assert {p.status for p in fold.projections.providers.all()} == {"maintenance"}
    fold(*(probe(name, T0 + 300, "failed") for name in names))
    alerts = fold.projections.alerts.query()
    assert sorted(a.id for a in alerts) == [1, 2, 3, 4, 5]
    assert {a.provider for a in alerts} == set(names)


def test_a_cron_window_covers_each_occurrence_from_the_probe_time_alone() -> None:
    fold = Harness()
    hourly = MaintenanceWindowScheduled(
        window_id="file:hourly",
        name="hourly",
        source="file",
        providers=("A",),
        cron="0 * * * *",
        duration_seconds=600,
    )
    base = 1_800_000_000.0 - 1_800_000_000.0 % 3600  # on the hour
    fold(registration("A"), hourly)
    fold(probe("A", base - 30, "success"))
    fold(probe("A", base, "failed"))  # the occurrence starts at its fire, inclusive
    state = fold.projections.providers.get("A")
    assert state is not None and state.status == "maintenance"
    assert state.window_ends_at == base + 600
    fold(probe("A", base + 600, "success"))  # its end is exclusive
    assert state.status == "online" and state.window is None
    fold(probe("A", base + 3600 + 1, "failed"))  # the next hour's
    assert state.status == "maintenance"
    fold(MaintenanceWindowCancelled("file:hourly", "config", base + 3700))
    fold(probe("A", base + 3720, "success"))
    assert state.status == "online"
    assert fold.projections.alerts.query() == []


def test_uptime_counts_window_probes_when_configured() -> None:
    fold = Harness(ProjectionSettings(maintenance_counts_in_uptime=True))
    fold(registration("A"), one_off("w", T0, T0 + 300, providers=("A",)))
    fold(*(probe("A", T0 + 10 * i, "failed") for i in range(5)))
    assert fold.projections.metrics.window("A", T0 - 60, T0 + 500, "health").count == 5
    assert fold.projections.alerts.query() == []  # still no alert


def test_replay_of_windows_equals_live_page_by_page() -> None:
    live = Harness()
    events: list[Any] = [registration("A"), registration("B")]
    events += [probe("A", T0 + 10 * i, "failed" if i % 3 else "success") for i in range(30)]
    events.append(one_off("w", T0 + 100, T0 + 250, providers=("A",), categories=("exchanges",)))
    events += [probe(n, T0 + 300 + 7 * i, "failed") for i in range(40) for n in ("A", "B")]
    events.append(MaintenanceWindowCancelled("w", "someone", T0 + 600))
    events.append(one_off("v", T0 + 300, T0 + 500, categories=("market_data",)))
    events += [probe(n, T0 + 300 + 7 * i + 3, "failed") for i in range(60) for n in ("A", "B")]
    live(*events)
    for page in (1, 7, 50, 10_000):
        replay = Projections()
        recorded = live.log.events
        for start in range(0, len(recorded), page):
            part = recorded[start : start + page]
            replay.fold_columns(
                [r.position for r in part], [r.recorded_at for r in part], [r.event for r in part]
            )
        assert replay.state_equal(live.projections) == [], page
    # An older snapshot without the maintenance entry rebuilds what reads it.
    snapshot = dict(live.projections.snapshot_state())
    del snapshot["maintenance"]
    restored = Projections.restore(snapshot, partial=True)
    assert set(restored.stale) >= {"maintenance", "providers", "alerts", "metrics"}


# ---- through the service -----------------------------------------------------------


class Service:
    def __init__(self, client: Client, nightly_hour: int) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {TOKEN}"}
        self.nightly_hour = nightly_hour  # when the file's window starts (UTC)

    async def check(self) -> None:
        path = "/api/scheduler/trigger/health_checks"
        async with self.client.post(path, headers=self.auth) as response:
            assert response.status == 200, await response.text()
        app = self.client.app
        async with asyncio.timeout(10):
            await app[READ_MODELS].wait_for(app[STORE].head)

    async def call(
        self, method: str, path: str, body: Any = None, *, token: bool = True
    ) -> tuple[int, Any]:
        headers = self.auth if token else {}
        async with self.client.request(method, path, json=body, headers=headers) as response:
            return response.status, await response.json()


@pytest.fixture
async def service(
    tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> AsyncIterator[Service]:
    # The file's window fires twelve hours from now: never while the test runs (at a fixed
    # hour it covered Fine for an hour a day, and the test failed then).
    nightly_hour = (time.gmtime().tm_hour + 12) % 24
    config = tmp_path / "cryptomon.toml"
    config.write_text(
        f"""
[monitoring]
offline_after_failures = 2

[[providers]]
name = "Flaky"
category = "exchanges"
base_url = "{standin.url("")}"
health_path = "/error500"
interval = "30s"

[[providers]]
name = "Fine"
category = "market_data"
base_url = "{standin.url("")}"
health_path = "/healthy"
interval = "30s"

[[maintenance]]
name = "nightly"
categories = ["market_data"]
cron = "0 {nightly_hour} * * *"
duration = "1h"
"""
    )
    settings = Settings.from_config(
        load_config(config),
        database=tmp_path / "maintenance.db",
        environ={"CRYPTOMON_API_TOKEN": TOKEN},
        probing=False,
    )
    yield Service(await aiohttp_client(create_app(settings)), nightly_hour)


async def test_api_windows_suppress_alerts_then_end_without_a_burst(service: Service) -> None:
    now = time.time()
    window = {
        "name": "exchange upgrade",
        "providers": ["Flaky"],
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
    }
    status, body = await service.call("POST", "/api/maintenance", window, token=False)
    assert status == 401, body
    status, created = await service.call("POST", "/api/maintenance", window)
    assert status == 201, created
    assert created["id"].startswith("api:") and created["state"] == "active"
    assert created["source"] == "api" and created["providers"] == ["Flaky"]

    for _ in range(4):
        await service.check()
    status, flaky = await service.call("GET", "/api/providers/Flaky")
    assert flaky["status"] == "maintenance"
    assert flaky["maintenance_window"]["id"] == created["id"]
    assert flaky["maintenance_window"]["name"] == "exchange upgrade"
    status, alerts = await service.call("GET", "/api/alerts")
    assert alerts["alerts"] == []
    async with service.client.get("/metrics") as response:
        text = await response.text()
    assert 'cryptomon_provider_in_maintenance{provider="Flaky"} 1' in text
    assert 'cryptomon_provider_in_maintenance{provider="Fine"} 0' in text

    status, listed = await service.call("GET", "/api/maintenance")
    by_id = {w["id"]: w for w in listed["windows"]}
    assert by_id["file:nightly"]["source"] == "file"
    assert by_id["file:nightly"]["categories"] == ["market_data"]
    assert by_id["file:nightly"]["next_start"].endswith(f"T{service.nightly_hour:02d}:00:00Z")
    assert by_id[created["id"]]["state"] == "active"

    # The file's window belongs to the file; the API's needs the token to cancel.
    status, problem = await service.call("DELETE", "/api/maintenance/file:nightly")
    assert status == 409 and "config file" in problem["detail"]
    status, problem = await service.call("DELETE", f"/api/maintenance/{created['id']}", token=False)
    assert status == 401
    status, cancelled = await service.call("DELETE", f"/api/maintenance/{created['id']}")
    assert status == 200 and cancelled["state"] == "cancelled"
    status, problem = await service.call("DELETE", f"/api/maintenance/{created['id']}")
    assert status == 409
    status, problem = await service.call("DELETE", "/api/maintenance/api:nope")
    assert status == 404

    # After it: judged afresh, as if the window's probes never were: one failure of one
    # probe judges nothing yet, the second in a row is the file's offline.
    await service.check()
    status, alerts = await service.call("GET", "/api/alerts")
    assert alerts["alerts"] == []
    status, flaky = await service.call("GET", "/api/providers/Flaky")
    assert flaky["status"] == "unknown"
    await service.check()
    status, alerts = await service.call("GET", "/api/alerts?open=true")
    assert {a["kind"] for a in alerts["alerts"]} == {"offline"}


async def test_bad_windows_get_a_problem_naming_the_field(service: Service) -> None:
    cases: list[tuple[Any, str]] = [
        ({"providers": ["Flaky"], "cron": "0 3 * * *", "duration": "1h"}, "name"),
        (
            {"name": "x", "providers": ["Nobody"], "cron": "0 3 * * *", "duration": "1h"},
            "providers",
        ),
        ({"name": "x", "providers": ["Flaky"], "cron": "every day", "duration": "1h"}, "cron"),
        ({"name": "x", "providers": ["Flaky"], "cron": "0 3 * * *"}, "duration"),
        ({"name": "x", "providers": ["Flaky"], "start": "2030-01-01T00:00:00Z"}, "end"),
        ({"name": "x", "cron": "0 3 * * *", "duration": "1h"}, "providers"),
        ({"name": "x", "providers": ["Flaky"], "cron": "0 3 * * *", "duration": "1h", "x": 1}, "x"),
        ([1, 2], "body"),
        # JSON has null where TOML has none: a key sent as null is no value, not one left out.
        ({"name": "x", "providers": ["Flaky"], "cron": None, "duration": "1h"}, "cron"),
        ({"name": "x", "providers": ["Flaky"], "start": None, "end": "2030-01-01T00:00:00Z"},
         "start"),
        ({"name": "x", "providers": None, "categories": ["exchanges"], "cron": "0 3 * * *",
          "duration": "1h"}, "providers"),
        # Times its views could not write (UTC past the year 9999), an occurrence past a year.
        ({"name": "x", "providers": ["Flaky"], "start": "2030-01-01T00:00:00Z",
          "end": "9999-12-31T23:59:59-23:59"}, "end"),
        ({"name": "x", "providers": ["Flaky"], "start": "0001-01-01T00:00:00+01:00",
          "end": "2030-01-01T00:00:00Z"}, "start"),
        ({"name": "x", "providers": ["Flaky"], "cron": "0 3 * * *", "duration": "99999999d"},
         "duration"),
    ]  # fmt: skip
    for body, field in cases:
        status, problem = await service.call("POST", "/api/maintenance", body)
        assert status == 400, (body, problem)
        assert problem["parameter"] == field, (body, problem)
    async with service.client.post(
        "/api/maintenance", data=b"{not json", headers=service.auth
    ) as response:
        assert response.status == 400
        assert (await response.json())["parameter"] == "body"
    # Nothing was recorded, so every view of the windows still answers.
    status, listed = await service.call("GET", "/api/maintenance")
    assert status == 200 and [w["id"] for w in listed["windows"]] == ["file:nightly"]


async def test_the_openapi_document_describes_the_body_of_a_window(service: Service) -> None:
    async with service.client.get("/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    create = document["paths"]["/api/maintenance"]["post"]
    body = create["requestBody"]
    assert body["required"] is True and list(body["content"]) == ["application/json"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rpartition("/")[2]]
    # The file's keys, the same and in the same order: the body takes what a
    # [[maintenance]] table takes, and nothing else.
    assert list(schema["properties"]) == list(MaintenanceConfig.__struct_fields__)
    assert list(schema["properties"]) == [
        "name", "providers", "categories", "cron", "duration", "start", "end"
    ]  # fmt: skip
    assert (schema["type"], schema["required"]) == ("object", ["name"])
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert properties["providers"]["items"] == {"type": "string"}
    assert sorted(properties["categories"]["items"]["enum"]) == sorted(CATEGORIES)
    assert properties["cron"]["type"] == properties["duration"]["type"] == "string"
    assert properties["start"]["format"] == properties["end"]["format"] == "date-time"
    pattern = re.compile(properties["duration"]["pattern"])
    assert pattern.search("30m") and pattern.search("1.5h") and not pattern.search("soon")
    # A key is left out, never null: no property admits it.
    nullable = [key for key, p in properties.items() if "anyOf" in p or p["type"] == "null"]
    assert nullable == []
    # A create answers 201 with the window, whose id the cancel takes.
    created = create["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith(
        "/MaintenanceWindowView"
    )
    assert created["links"]["delete_cancel_window"]["parameters"] == {
        "window_id": "$response.body#/id"
    }
    assert "200" not in create["responses"]
    # No other route documents a body it does not take.
    bodies = [
        (path, method)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    ]
    assert sorted(bodies) == [
        ("/api/maintenance", "post"), ("/api/providers", "post"), ("/api/providers/{name}", "put")
    ]  # fmt: skip


async def test_the_files_windows_are_recorded_once_and_cancelled_when_gone(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    config = tmp_path / "cryptomon.toml"
    database = tmp_path / "file.db"
    window = """
[[maintenance]]
name = "{name}"
providers = ["A"]
start = "2030-01-01T02:00:00Z"
end = "2030-01-01T03:00:00Z"
"""

    async def serve(*names: str) -> list[Any]:
        config.write_text(PROVIDER + "".join(window.format(name=name) for name in names))
        settings = Settings.from_config(
            load_config(config), database=database, environ={}, probing=False
        )
        client = await aiohttp_client(create_app(settings))
        async with client.get("/api/events?limit=1000") as response:
            events = (await response.json())["events"]
        await client.close()
        return [e for e in events if e["type"].startswith("Maintenance")]

    first = await serve("one", "two")
    assert [e["type"] for e in first] == ["MaintenanceWindowScheduled"] * 2
    assert await serve("one", "two") == first  # unchanged: nothing recorded
    third = await serve("one")
    assert [e["type"] for e in third[2:]] == ["MaintenanceWindowCancelled"]
    assert third[2]["stream"] == "maintenance:file:two"
    assert await serve("one") == third  # cancelled once


# ---- through the service in a subprocess, with a webhook receiver ------------------

# How long the window lasts from its creation: long enough for its probes on a loaded
# machine, short enough that waiting for its end keeps the test quick.
WINDOW_SECONDS = 6.0
IN_WINDOW_PROBES = 10  # the failure rate's minimum: counted, they would raise one after
TRIGGER = "/api/scheduler/trigger/health_checks"


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_a_window_holds_back_alerts_and_notifications_then_what_still_fails_raises_one(
    standin: StandIn, tmp_path: Path
) -> None:
    """The real service with a webhook channel: a provider failing inside a window raises
    no alert and sends nothing; once the window has ended, the failures that still hold
    raise their alert and one notification, with no burst (no failure_rate)."""
    async with Receiver.start() as receiver:
        config = tmp_path / "service.toml"
        config.write_text(
            "[monitoring]\noffline_after_failures = 1\n"
            '[[providers]]\nname = "Failing"\ncategory = "exchanges"\n'
            f'base_url = "{standin.url("")}"\nhealth_path = "/error500"\n'
            # Probed when the test triggers it, and by its schedule only at New Year.
            'cron = "0 0 1 1 *"\n' + webhook("ops", receiver.url("/hook"))
        )
        environ = {"CRYPTOMON_API_TOKEN": TOKEN}
        async with (
            run_service(config, tmp_path / "service.db", environ) as service,
            aiohttp.ClientSession() as session,
        ):
            url = service.url

            async def probe_now() -> int:
                """Probe Failing now; the log's head once its result is read."""
                status, ran = await call(session, "POST", url + TRIGGER)
                assert (status, ran["tasks_run"]) == (200, 1), ran
                head: int = ran["position"]
                return head

            async def probes(after: int = 0) -> list[Any]:
                status, page = await get(
                    session, f"{url}/api/events?type=ProbeRecorded&after={after}"
                )
                assert status == 200, page
                found: list[Any] = page["events"]
                return found

            async def notified_up_to(position: int) -> dict[str, Any]:
                """The channel once the notices of every event up to `position` are stored
                and none waits to be sent."""

                async def settled() -> dict[str, Any] | None:
                    status, body = await get(session, f"{url}/api/notifications")
                    assert status == 200 and body["enabled"] is True, body
                    [channel] = body["channels"]
                    done = body["position"] >= position and channel["pending"] == 0
                    return channel if done else None

                found: dict[str, Any] = await until(settled, f"the notices up to {position}")
                return found

            now = time.time()
            window = {
                "name": "exchange upgrade",
                "providers": ["Failing"],
                "start": iso_time(now - 60),
                "end": iso_time(now + WINDOW_SECONDS),
            }
            status, created = await call(session, "POST", f"{url}/api/maintenance", window)
            assert (status, created["state"]) == (201, "active"), created
            ends_at = datetime.fromisoformat(created["end"]).timestamp()  # as the server has it

            # Inside the window: every probe fails, and nothing is raised or sent.
            for _ in range(IN_WINDOW_PROBES):
                in_window = await probe_now()
            inside = await probes()
            assert [e["payload"]["outcome"] for e in inside] == ["failed"] * IN_WINDOW_PROBES
            late = [e for e in inside if e["payload"]["started_at"] >= ends_at]
            assert late == [], "the machine was too slow: probes fell after the window"
            status, failing = await get(session, f"{url}/api/providers/Failing")
            assert failing["status"] == "maintenance", failing
            assert failing["maintenance_window"] == {
                "id": created["id"], "name": "exchange upgrade", "ends_at": created["next_end"]
            }  # fmt: skip
            status, alerts = await get(session, f"{url}/api/alerts")
            assert (status, alerts["alerts"]) == (200, [])
            channel = await notified_up_to(in_window)
            assert (channel["delivered"], channel["failed"]) == (0, 0), channel
            assert receiver.requests == []

            # The window ends by the clock; the probes after it are judged afresh.
            async def ended() -> bool:
                status, listed = await get(session, f"{url}/api/maintenance")
                assert status == 200, listed
                [shown] = [w for w in listed["windows"] if w["id"] == created["id"]]
                return bool(shown["state"] == "past")

            await until(ended, "the end of the window", seconds=WINDOW_SECONDS + 20)
            for _ in range(3):
                last = await probe_now()
            first, *_ = after = await probes(in_window)
            assert [e["payload"]["outcome"] for e in after] == ["failed"] * 3
            assert first["payload"]["started_at"] >= ends_at
            status, failing = await get(session, f"{url}/api/providers/Failing")
            assert (failing["status"], failing["maintenance_window"]) == ("offline", None)
            status, alerts = await get(session, f"{url}/api/alerts")
            # Raised by the first probe after the window, and alone: no failure_rate, though
            # 13 probes of 13 failed, for the window's probes fed no failure rate.
            [alert] = alerts["alerts"]
            assert (alert["kind"], alert["position"]) == ("offline", first["position"]), alert

            # One notification, of that alert; nothing else is to come from these events.
            channel = await notified_up_to(last)
            assert (channel["delivered"], channel["failed"]) == (1, 0), channel
            [request] = receiver.requests
            assert request.path == "/hook"
            note = request.json
            # Of the incident it opened (the channel groups by incident, the default).
            assert (note["event"], note["provider"], note["severity"]) == (
                "incident_opened", "Failing", "critical"
            )  # fmt: skip
            assert note["incident"]["alert_ids"] == [alert["id"]]
            assert note["incident"]["alerts"][0]["kind"] == "offline"
            assert note["position"] == first["position"]
