"""The service as users run it: `python -m cryptomon serve` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci import IN_CI


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Service:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, object]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def post(self, path: str) -> tuple[int, object]:
        request = urllib.request.Request(self.url + path, method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())


def start(config: Path, db: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cryptomon", "serve", "--config", str(config), "--db", str(db),
         "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def wait_listening(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "monitoring" in line:
            return "".join(lines)
    raise AssertionError(f"never listened: {''.join(lines)}")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "service.toml"
    # Schemathesis sends thousands of requests from one address: past the default
    # per-client limits they would be answered 429 and the routes behind left untested.
    path.write_text(
        "[server]\nrequests_per_second = 100000\nrequest_burst = 100000\n"
        '[[providers]]\nname = "Gone"\ncategory = "news"\n'
        f'base_url = "http://127.0.0.1:{free_port()}"\ninterval = "1h"\n'
        '[[providers]]\nname = "Keyed"\ncategory = "news"\nbase_url = "https://keyed.invalid"\n'
        'interval = "1h"\napi_key_env = "CRYPTOMON_TEST_UNSET_KEY"\napi_key_query = "k"\n'
    )
    return path


@pytest.fixture
def service(config: Path, tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    process = start(config, tmp_path / "service.db", port)
    try:
        wait_listening(process)
        yield Service(process, port)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_start_up_says_where_it_listens_and_what_it_skips(config: Path, tmp_path: Path) -> None:
    port = free_port()
    process = start(config, tmp_path / "s.db", port)
    try:
        output = wait_listening(process)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.stdout is not None
        rest = process.stdout.read()  # not communicate(): it would skip what readline buffered
        process.wait(timeout=30)
        process.stdout.close()
    output += rest
    assert f"listening on http://127.0.0.1:{port}" in output
    assert "/docs" in output and "/ws/live" in output
    assert str(tmp_path / "s.db") in output and str(config) in output
    assert "monitoring 1 providers, skipping 1" in output
    assert "Keyed: set CRYPTOMON_TEST_UNSET_KEY to probe it" in output
    assert process.returncode == 0


def test_sigterm_finishes_cleanly_and_loses_nothing(service: Service, tmp_path: Path) -> None:
    status, triggered = service.post("/api/scheduler/trigger/health_checks")
    assert status == 200
    assert isinstance(triggered, dict)
    acknowledged = triggered["position"]
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=30) == 0
    with sqlite3.connect(tmp_path / "service.db") as conn:
        head = conn.execute("SELECT MAX(position) FROM events").fetchone()[0]
        snapshot = conn.execute("SELECT MIN(position) FROM snapshots").fetchone()[0]
    assert head >= acknowledged
    assert snapshot == head  # the read models caught up and were saved at shutdown
    verify = subprocess.run(
        [sys.executable, "-m", "cryptomon", "verify", "--db", str(tmp_path / "service.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout


def test_a_second_service_on_the_same_database_fails_at_once(
    service: Service, config: Path, tmp_path: Path
) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
         "--db", str(tmp_path / "service.db"), "--port", str(free_port())],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert second.returncode == 2
    assert "in use by another cryptomon process" in second.stderr
    # The first serves on, healthy and ready though its provider Gone refuses connections.
    assert service.get("/health")[0] == 200
    assert service.get("/readyz")[0] == 200
    assert service.get("/livez") == (200, {"status": "alive"})


def test_schemathesis_finds_no_server_errors_and_no_schema_drift(
    service: Service, tmp_path: Path
) -> None:
    # Found in its working directory. A generated request never upgrades to a WebSocket,
    # so /ws/live's right answer to a valid one is the documented 426.
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-path = "/ws/live"\n'
        'checks.positive_data_acceptance.expected-statuses = ["426"]\n'
        # A window's body is checked as the config file's is (a provider that exists, a
        # cron that fires, an end after its start): the document does not describe those
        # rules, so a request it allows may get the documented 400 naming the key.
        '[[operations]]\ninclude-operation-id = "post_create_window"\n'
        'checks.positive_data_acceptance.expected-statuses = ["201", "400"]\n'
        # A provider's body likewise (a schedule, a condition that parses, no secret), and
        # its name may be taken; a PUT's If-Match must be the provider's current version.
        '[[operations]]\ninclude-operation-id = "post_create_provider"\n'
        'checks.positive_data_acceptance.expected-statuses = ["201", "400", "409"]\n'
        '[[operations]]\ninclude-operation-id = "put_replace_provider"\n'
        'checks.positive_data_acceptance.expected-statuses = ["200", "400", "404", "409", "412"]\n'
        # Without its If-Match a PUT gets RFC 6585's 428 Precondition Required, once the
        # provider is known to be there (404) and the API's to change (409).
        'checks.missing_required_header.expected-statuses = ["400", "404", "409", "428"]\n'
        '[[operations]]\ninclude-operation-id = "delete_delete_provider"\n'
        'checks.positive_data_acceptance.expected-statuses = ["200", "400", "404", "409", "412"]\n'
        # A report covers whole UTC days, at most 400 of them: the document cannot say that
        # `from` and `to` are midnights, the one after the other and a bounded span apart.
        '[[operations]]\ninclude-operation-id = "get_uptime"\n'
        'checks.positive_data_acceptance.expected-statuses = ["200", "400", "404"]\n'
    )
    result = subprocess.run(
        # Through this interpreter, not a `schemathesis` found on PATH: a virtual
        # environment that was never activated has its scripts off PATH. (4.x has no
        # `python -m schemathesis`; its CLI package runs.)
        [sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/openapi.json",
         "--checks", "all", "--max-examples", "25", "--no-color",
         # Gone is offline, and the health checks are tested all the same: it never
         # makes them 503.
         *(["--seed", "1"] if IN_CI else [])],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # it leaves a cache dir
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    # The stateful phase follows the spec's links: alerts to acknowledge, jobs to trigger.
    assert "API Links:" in result.stdout, result.stdout[-6000:]
