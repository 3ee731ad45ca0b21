"""Providers managed over the API: created, changed (If-Match), paused, resumed and
deleted, recorded in the log with their whole definition so a restart keeps them and a
replay equals live. Through the service as users run it (`python -m cryptomon serve` in a
subprocess) and, for the many refusals, through the app in this process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from standins import StandIn
from test_projections import T0, Harness, probe, registration
from test_reload import serve

from cryptomon.config import Config, check_provider_body, load_config
from cryptomon.events.log import open_event_log
from cryptomon.events.types import ProviderPaused, ProviderResumed
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.probing.definitions import DefinitionRefused, read_book
from cryptomon.probing.monitor import Monitor
from cryptomon.projections.notices import AlertRaised
from cryptomon.service.app import create_app

TOKEN = "providers-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRIGGER = "/api/scheduler/trigger/health_checks"

Client = TestClient[Any, Any]


def definition(name: str, url: str, path: str = "/healthy", **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "category": "exchanges",
        "base_url": url,
        "health_path": path,
        "interval": "1h",
        **more,
    }


class Api:
    """JSON calls to one service, with the token unless told otherwise."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        sent = {**(AUTH if token else {}), **(headers or {})}
        async with self.session.request(
            method, self.url + path, json=body, headers=sent
        ) as response:
            return response.status, await response.json(content_type=None), response.headers.copy()

    async def names(self, *, removed: bool = False) -> set[str]:
        status, body, _ = await self.call("GET", f"/api/providers?removed={str(removed).lower()}")
        assert status == 200, body
        return {p["name"] for p in body["providers"]}

    async def run_health_checks(self) -> int:
        status, body, _ = await self.call("POST", TRIGGER)
        assert status == 200, body
        tasks_run: int = body["tasks_run"]
        return tasks_run


async def test_crud_over_the_api_then_a_restart_keeps_it_and_replay_equals_live(
    standin: StandIn, tmp_path: Path
) -> None:
    config = tmp_path / "service.toml"
    config.write_text(
        '[[providers]]\nname = "FromFile"\ncategory = "news"\n'
        f'base_url = "{standin.url("")}"\nhealth_path = "/healthy"\ninterval = "1h"\n'
    )
    db = tmp_path / "service.db"
    environ = {"CRYPTOMON_API_TOKEN": TOKEN}
    made = definition("Made", standin.url(""), "/error500")
    async with serve(config, db, environ) as service, aiohttp.ClientSession() as session:
        api = Api(session, service.url)
        # No token: every new write route says 401, and nothing is recorded.
        for method, path, body in [
            ("POST", "/api/providers", made),
            ("PUT", "/api/providers/FromFile", definition("FromFile", standin.url(""))),
            ("DELETE", "/api/providers/FromFile", None),
            ("POST", "/api/providers/FromFile/pause", None),
            ("POST", "/api/providers/FromFile/resume", None),
        ]:
            status, problem, _ = await api.call(method, path, body, token=False)
            assert status == 401, (method, path, problem)
        assert await api.names() == {"FromFile"}

        status, created, headers = await api.call("POST", "/api/providers", made)
        assert status == 201, created
        assert headers["Location"] == "/api/providers/Made"
        assert headers["ETag"] == f'"{created["version"]}"'
        assert (created["source"], created["definition"]) == ("api", made)
        status, listed, _ = await api.call("GET", "/api/providers")
        sources = {p["name"]: p["source"] for p in listed["providers"]}
        assert sources == {"FromFile": "file", "Made": "api"}
        # Scheduled as soon as it is defined: one run of the health checks probes both.
        assert await api.run_health_checks() == 2
        status, failing, headers = await api.call("GET", "/api/providers/Made")
        assert failing["last_probe"]["endpoint"] == "/error500"
        etag = headers["ETag"]

        # A PUT must name the version it read.
        fixed = definition("Made", standin.url(""), "/healthy")
        status, problem, _ = await api.call("PUT", "/api/providers/Made", fixed)
        assert (status, problem["type"]) == (428, "/problems/precondition-required")
        stale = {"If-Match": f'"{created["version"] - 1}"'}
        status, problem, _ = await api.call("PUT", "/api/providers/Made", fixed, headers=stale)
        assert (status, problem["type"]) == (412, "/problems/version-mismatch")
        status, changed, headers = await api.call(
            "PUT", "/api/providers/Made", fixed, headers={"If-Match": etag}
        )
        assert status == 200, changed
        assert changed["definition"]["health_path"] == "/healthy"
        assert headers["ETag"] != etag
        status, problem, _ = await api.call(
            "PUT", "/api/providers/Made", fixed, headers={"If-Match": etag}
        )
        assert status == 412, problem  # the version it named is gone
        assert await api.run_health_checks() == 2
        status, probed, _ = await api.call("GET", "/api/providers/Made")
        assert probed["last_probe"]["endpoint"] == "/healthy"

        # The file's provider belongs to the file.
        status, problem, _ = await api.call(
            "PUT", "/api/providers/FromFile", definition("FromFile", standin.url("")),
            headers={"If-Match": "*"},
        )  # fmt: skip
        assert (status, problem["type"]) == (409, "/problems/defined-by-file")
        assert "config file" in problem["detail"]
        status, problem, _ = await api.call("DELETE", "/api/providers/FromFile")
        assert (status, problem["type"]) == (409, "/problems/defined-by-file")

        # Paused: not probed; resumed: probed again.
        status, paused, _ = await api.call("POST", "/api/providers/Made/pause")
        assert (status, paused["status"], paused["paused_by"]) == (200, "paused", "token")
        assert await api.run_health_checks() == 1
        status, resumed, _ = await api.call("POST", "/api/providers/Made/resume")
        assert (status, resumed["status"], resumed["paused_by"]) == (200, "unknown", None)
        assert await api.run_health_checks() == 2

        # Deleted: no longer probed or listed, its history kept and marked removed.
        status, _, _ = await api.call("POST", "/api/providers", definition("Gone", standin.url("")))
        assert status == 201
        assert await api.run_health_checks() == 3
        status, gone, _ = await api.call("DELETE", "/api/providers/Gone")
        assert (status, gone["removed"]) == (200, True)
        assert await api.names() == {"FromFile", "Made"}
        assert await api.names(removed=True) == {"FromFile", "Made", "Gone"}
        assert await api.run_health_checks() == 2
        status, last, _ = await api.call("GET", "/api/providers/Made")
        version = last["version"]
        service.process.send_signal(signal.SIGTERM)
        assert await service.process.wait() == 0

    # A restart rebuilds the API's providers from the log.
    async with serve(config, db, environ) as service, aiohttp.ClientSession() as session:
        api = Api(session, service.url)
        assert await api.names() == {"FromFile", "Made"}
        status, kept, headers = await api.call("GET", "/api/providers/Made")
        assert (kept["source"], kept["definition"], kept["version"]) == ("api", fixed, version)
        assert headers["ETag"] == f'"{version}"'
        assert await api.run_health_checks() == 2
        status, events, _ = await api.call("GET", "/api/events?type=ProviderRegistered&limit=100")
        for event in events["events"]:
            assert "token" not in str(event["payload"]).lower(), event
        service.process.send_signal(signal.SIGTERM)
        assert await service.process.wait() == 0

    replay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", "replay", "--config", str(config), "--db", str(db),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(replay.communicate(), 60)
    assert replay.returncode == 0, output.decode()
    assert "OK: replayed" in output.decode()


# ---- in this process: refusals, the catalogue, alerts --------------------------------


class Service(Api):
    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: bool = True,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        sent = {**(AUTH if token else {}), **(headers or {})}
        async with self.client.request(
            method, path, json=body if raw is None else None, data=raw, headers=sent
        ) as response:
            return response.status, await response.json(content_type=None), response.headers.copy()

    async def settled(self) -> None:
        app = self.client.app
        async with asyncio.timeout(10):
            await app[READ_MODELS].wait_for(app[STORE].head)


@pytest.fixture
async def service(
    tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> AsyncIterator[Service]:
    config = tmp_path / "cryptomon.toml"
    config.write_text(
        '[monitoring]\noffline_after_failures = 1\n[[providers]]\nname = "FromFile"\n'
        f'category = "news"\nbase_url = "{standin.url("")}"\nhealth_path = "/healthy"\n'
        'interval = "1h"\n'
    )
    settings = Settings.from_config(
        load_config(config),
        database=tmp_path / "api.db",
        environ={"CRYPTOMON_API_TOKEN": TOKEN, "SOME_KEY": "s3cr3t-value"},
        probing=False,
    )
    yield Service(await aiohttp_client(create_app(settings)))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"category": "news", "base_url": "http://127.0.0.1:9", "interval": "1m"}, "name"),
        ({"name": "X", "category": "nope", "base_url": "http://127.0.0.1:9", "interval": "1m"},
         "category"),
        ({"name": "X", "category": "news", "base_url": "http://127.0.0.1:9"}, "interval"),
        ({"name": "X", "category": "news", "base_url": "ftp://x", "interval": "1m"}, "base_url"),
        ({"name": "X", "category": "news", "base_url": "http://127.0.0.1:9", "interval": "soon"},
         "interval"),
        ({"name": "X", "category": "news", "base_url": "http://127.0.0.1:9", "interval": "1m",
          "colour": "red"}, "colour"),
        ({"name": "a/b", "category": "news", "base_url": "http://127.0.0.1:9", "interval": "1m"},
         "name"),
        # Secrets never travel in a body: a key, a literal secret header, a key in a URL.
        ({"name": "X", "category": "news", "base_url": "http://127.0.0.1:9", "interval": "1m",
          "api_key": "s3cr3t-value"}, "api_key"),
        ({"name": "X", "category": "news", "base_url": "http://127.0.0.1:9", "interval": "1m",
          "headers": {"Authorization": "Bearer s3cr3t-value"}}, "headers.Authorization"),
        ({"name": "X", "category": "news", "base_url": "http://127.0.0.1:9?apikey=s3cr3t-value",
          "interval": "1m"}, "base_url"),
        ({"name": "X", "category": "news", "base_url": "http://u:s3cr3t-value@127.0.0.1:9",
          "interval": "1m"}, "base_url"),
        ({"name": "X", "category": "news", "base_url": "http://127.0.0.1:9", "interval": "1m",
          "collections": [{"path": "/d", "headers": {"X-API-Key": "s3cr3t-value"}}]},
         "collections[0].headers.X-API-Key"),
        ({"name": "X", "category": "news", "base_url": "http://127.0.0.1:9", "interval": "1m",
          "conditions": ["[STATUS] =="]}, "conditions[0]"),
        ([1, 2], "body"),
    ],
)  # fmt: skip
async def test_a_bad_definition_is_refused_naming_the_key(
    service: Service, body: Any, field: str
) -> None:
    status, problem, _ = await service.call("POST", "/api/providers", body)
    assert status == 400, problem
    assert problem["parameter"] == field, problem
    assert "s3cr3t-value" not in str(problem)
    assert await service.names() == {"FromFile"}


async def test_bad_requests_name_what_is_wrong_and_record_nothing(
    service: Service, standin: StandIn
) -> None:
    store = service.client.app[STORE]
    before = store.head
    status, problem, _ = await service.call("POST", "/api/providers", raw=b"{not json")
    assert (status, problem["parameter"]) == (400, "body")
    status, problem, _ = await service.call("POST", "/api/providers", raw=b" " * 70_000)
    assert (status, problem["status"]) == (413, 413)
    # Names are compared without case, as in the file.
    status, problem, _ = await service.call(
        "POST", "/api/providers", definition("fromfile", standin.url(""))
    )
    assert (status, problem["type"]) == (409, "/problems/provider-exists")
    for method, path in [
        ("PUT", "/api/providers/Nobody"),
        ("DELETE", "/api/providers/Nobody"),
        ("POST", "/api/providers/Nobody/pause"),
        ("POST", "/api/providers/Nobody/resume"),
    ]:
        status, problem, _ = await service.call(
            method, path, definition("Nobody", standin.url("")), headers={"If-Match": "*"}
        )
        assert status == 404, (method, path, problem)
    assert store.head == before

    status, created, headers = await service.call(
        "POST", "/api/providers", definition("Made", standin.url(""))
    )
    assert status == 201, created
    # The path names the provider: the body may leave the name out but not contradict it.
    renamed = definition("Other", standin.url(""))
    status, problem, _ = await service.call(
        "PUT", "/api/providers/Made", renamed, headers={"If-Match": headers["ETag"]}
    )
    assert (status, problem["parameter"]) == (400, "name")
    for bad in ("42", '"x"', '"1", 2', "W/", ","):
        status, problem, _ = await service.call(
            "PUT", "/api/providers/Made", definition("Made", standin.url("")),
            headers={"If-Match": bad},
        )  # fmt: skip
        assert (status, problem["parameter"]) == (400, "If-Match"), bad
    nameless = definition("Made", standin.url(""), "/error500")
    del nameless["name"]
    status, changed, _ = await service.call(
        "PUT", "/api/providers/Made", nameless, headers={"If-Match": headers["ETag"]}
    )
    assert (status, changed["definition"]["health_path"]) == (200, "/error500"), changed
    status, problem, _ = await service.call("POST", "/api/providers/Made/resume")
    assert (status, problem["type"]) == (409, "/problems/not-paused")
    assert (await service.call("POST", "/api/providers/Made/pause"))[0] == 200
    status, problem, _ = await service.call("POST", "/api/providers/Made/pause")
    assert (status, problem["type"]) == (409, "/problems/already-paused")


async def test_a_secret_header_named_by_env_is_accepted_and_never_shown(
    service: Service, standin: StandIn
) -> None:
    body = definition(
        "Keyed", standin.url(""), headers={"X-API-Key": "env:SOME_KEY", "User-Agent": "ua"}
    )
    status, created, _ = await service.call("POST", "/api/providers", body)
    assert status == 201, created
    assert (await service.run_health_checks()) == 2
    assert standin.last_headers["X-API-Key"] == "s3cr3t-value"  # read from the env
    status, view, _ = await service.call("GET", "/api/providers/Keyed")
    assert "s3cr3t-value" not in str(view)
    status, events, _ = await service.call("GET", "/api/events?limit=100")
    assert "s3cr3t-value" not in str(events)


async def test_pausing_resolves_open_alerts(service: Service, standin: StandIn) -> None:
    body = definition("Failing", standin.url(""), "/error500")
    assert (await service.call("POST", "/api/providers", body))[0] == 201
    await service.run_health_checks()
    await service.settled()
    status, alerts, _ = await service.call("GET", "/api/alerts?provider=Failing")
    [offline] = [a for a in alerts["alerts"] if a["alert_type"] == "offline"]
    assert offline["resolved_at"] is None
    status, paused, _ = await service.call("POST", "/api/providers/Failing/pause")
    assert paused["status"] == "paused"
    status, alerts, _ = await service.call("GET", "/api/alerts?provider=Failing")
    assert all(alert["resolved_at"] is not None for alert in alerts["alerts"]), alerts
    status, health, _ = await service.call("GET", "/api/status")
    assert (status, health["paused"]) == (200, 1), health


async def test_a_catalogue_provider_is_paused_or_disabled_but_not_edited(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    config = tmp_path / "catalogue.toml"
    config.write_text("[server]\nport = 8080\n")  # no providers: the bundled catalogue
    loaded = load_config(config)
    assert loaded.providers_source == "catalogue"
    name = loaded.providers[0].name

    async def started() -> Service:
        settings = Settings.from_config(
            loaded, database=tmp_path / "cat.db", environ={"CRYPTOMON_API_TOKEN": TOKEN},
            probing=False,
        )  # fmt: skip
        return Service(await aiohttp_client(create_app(settings)))

    service = await started()
    status, view, headers = await service.call("GET", f"/api/providers/{name}")
    assert view["source"] == "catalogue"
    whole = definition(name, "https://example.invalid")
    status, problem, _ = await service.call(
        "PUT", f"/api/providers/{name}", whole, headers={"If-Match": headers["ETag"]}
    )
    assert (status, problem["type"]) == (409, "/problems/defined-by-catalogue")
    status, paused, _ = await service.call("POST", f"/api/providers/{name}/pause")
    assert (status, paused["status"]) == (200, "paused")
    status, disabled, _ = await service.call("DELETE", f"/api/providers/{name}")
    assert (status, disabled["removed"]) == (200, True)
    await service.client.close()

    # Disabled across a restart, though the catalogue still lists it.
    service = await started()
    assert name not in await service.names()
    status, problem, _ = await service.call("POST", "/api/providers", whole)
    assert (status, problem["type"]) == (409, "/problems/provider-exists")
    status, back, _ = await service.call("POST", f"/api/providers/{name}/resume")
    assert (status, back["removed"], back["source"]) == (200, False, "catalogue")
    assert name in await service.names()


async def test_refusals_say_what_is_there_before_what_the_request_lacks(
    service: Service, standin: StandIn
) -> None:
    # A PUT without If-Match to a provider the API cannot change, or that is not there.
    body = definition("FromFile", standin.url(""))
    status, problem, _ = await service.call("PUT", "/api/providers/FromFile", body)
    assert (status, problem["type"]) == (409, "/problems/defined-by-file")
    status, problem, _ = await service.call("PUT", "/api/providers/Nobody", body)
    assert status == 404, problem
    status, _, headers = await service.call(
        "POST", "/api/providers", definition("Made", standin.url(""))
    )
    assert status == 201
    etag = headers["ETag"]
    # If-Match compares strongly: a weak tag never matches; a list matches any of its tags.
    changed = definition("Made", standin.url(""), "/slow")
    status, problem, _ = await service.call(
        "PUT", "/api/providers/Made", changed, headers={"If-Match": f"W/{etag}"}
    )
    assert (status, problem["type"]) == (412, "/problems/version-mismatch")
    status, answer, _ = await service.call(
        "PUT", "/api/providers/Made", changed, headers={"If-Match": f'"1", {etag}'}
    )
    assert status == 200, answer


@pytest.mark.parametrize(
    ("more", "field"),
    [
        ({"body": {"query": "q", "apiKey": "s3cr3t-value"}}, "body"),
        ({"rpc": {"method": "m", "params": [{"access_token": "s3cr3t-value"}]}}, "rpc"),
        ({"health_path": "/v1?api_key=s3cr3t-value"}, "health_path"),
        ({"name": "bad\r\nX-Injected: 1"}, "name"),
        ({"name": "x" * 101}, "name"),
    ],
)
async def test_a_secret_or_a_name_that_breaks_headers_is_refused(
    service: Service, more: dict[str, Any], field: str
) -> None:
    body = {**definition("Odd", "http://127.0.0.1:9"), **more}
    status, problem, _ = await service.call("POST", "/api/providers", body)
    assert (status, problem.get("parameter")) == (400, field), problem
    assert "s3cr3t-value" not in str(problem)
    assert await service.names() == {"FromFile"}


async def test_a_body_that_names_a_token_address_and_a_name_with_a_query_mark_are_fine(
    service: Service, standin: StandIn
) -> None:
    body = definition("What?", standin.url(""), body={"token": "0xabc", "publicKey": "p"})
    status, created, headers = await service.call("POST", "/api/providers", body)
    assert status == 201, created
    assert headers["Location"] == "/api/providers/What%3F"
    status, found, _ = await service.call("GET", headers["Location"])
    assert (status, found["name"]) == (200, "What?")


async def test_a_body_sent_in_pieces_is_read_whole(service: Service, standin: StandIn) -> None:
    body = json.dumps(definition("Pieces", standin.url(""), conditions=["[STATUS] == 200"] * 60))
    port = service.client.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /api/providers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode() + body[:100].encode())
    await writer.drain()
    # The server has the first hundred bytes; the rest comes in a second write.
    status, _, _ = await service.call("GET", "/api/providers/FromFile")
    assert status == 200
    writer.write(body[100:].encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]


async def test_two_instances_on_one_log_cannot_both_create_a_name(
    tmp_path: Path, standin: StandIn
) -> None:
    """The second instance has not followed the first's create: it reads the log as it is."""
    store = await open_event_log(tmp_path / "shared.db")
    config = Config()
    async with aiohttp.ClientSession() as session:
        first = Monitor(config, store, session, environ={}, instance="one")
        second = Monitor(config, store, session, environ={}, instance="two")
        await first.load()
        await second.load()
        made = definition("x", standin.url(""))
        await first.create(check_provider_body(made), made, "alice")
        with pytest.raises(DefinitionRefused) as refused:
            await second.create(check_provider_body(made), made, "bob")
        assert refused.value.status == 409
        # The second pauses what the first made without having followed it.
        await second.pause("x", "bob")
        book = await read_book(store)
        assert book["x"].paused and book["x"].registered_by == "alice"
        await first.stop()
        await second.stop()
    await store.close()


async def test_a_key_set_after_the_provider_was_defined_counts_after_a_restart(
    tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient
) -> None:
    config = tmp_path / "keys.toml"
    config.write_text("providers = []\n")

    async def started(environ: dict[str, str]) -> Service:
        settings = Settings.from_config(
            load_config(config), database=tmp_path / "keys.db",
            environ={"CRYPTOMON_API_TOKEN": TOKEN, **environ}, probing=False,
        )  # fmt: skip
        return Service(await aiohttp_client(create_app(settings)))

    service = await started({})
    body = definition("Keyed", standin.url(""), api_key_env="LATER_KEY", api_key_header="X-Key")
    status, created, _ = await service.call("POST", "/api/providers", body)
    assert (status, created["status"]) == (201, "unconfigured")
    await service.client.close()
    service = await started({"LATER_KEY": "k"})
    status, view, _ = await service.call("GET", "/api/providers/Keyed")
    assert view["status"] == "unknown", view  # judged from its probes from now on
    assert view["definition"] == body


def test_probes_of_a_paused_provider_folded_late_judge_nothing() -> None:
    """Another instance's probe, in flight when the pause was recorded, comes after it."""
    fold = Harness()
    fold(registration("A"))
    fold(ProviderPaused("A", "alice", T0))
    late = fold(*(probe("A", T0 + i, "failed") for i in range(20)))
    assert not [n for n in late if isinstance(n, AlertRaised)]
    assert fold.projections.alerts.query(open_only=True) == []
    fold(ProviderResumed("A", "alice", T0 + 100))
    after = fold(*(probe("A", T0 + 100 + i, "failed") for i in range(5)))
    assert [n for n in after if isinstance(n, AlertRaised)]
