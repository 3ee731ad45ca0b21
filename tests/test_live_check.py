"""The real CLI over HTTPS and plain stand-ins: certificate expiry through the running
service, and `check-config --live` probing every provider once.

The stand-ins' certificates come from a throwaway CA (trustme) that the CLI trusts through
SSL_CERT_FILE, as a user with a private CA would make it trust theirs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from standins import StandIn

CERTIFICATE_DAYS_LEFT = 2.5  # under the default 3-day critical threshold


@dataclass
class Https:
    standin: StandIn
    ca_file: Path
    not_after: datetime


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[Https]:
    ca = trustme.CA()
    # Whole seconds: a certificate's notAfter has no finer resolution.
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=CERTIFICATE_DAYS_LEFT)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", not_after=not_after).configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with StandIn.start(context) as standin:
        yield Https(standin, ca_file, not_after)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def cli(*args: str, ca_file: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cryptomon",
        *args,
        env={**os.environ, "SSL_CERT_FILE": str(ca_file)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def poll(session: aiohttp.ClientSession, url: str, ready: Any, seconds: float = 30) -> Any:
    """GET `url` until `ready(body)` is true; the body then."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    body = await response.json()
                    if ready(body):
                        return body
        except aiohttp.ClientConnectionError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"{url} never became ready"
        await asyncio.sleep(0.1)


async def test_a_certificate_near_expiry_raises_a_critical_alert_and_shows_its_days(
    https: Https, tmp_path: Path
) -> None:
    config = tmp_path / "tls.toml"
    config.write_text(
        f'[[providers]]\nname = "Near expiry"\ncategory = "market_data"\n'
        f'base_url = "{https.standin.url("")}"\nhealth_path = "/healthy"\ninterval = "1s"\n'
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
        "--db", str(tmp_path / "tls.db"), "--port", str(port),
        env={**os.environ, "SSL_CERT_FILE": str(https.ca_file)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            alerts = await poll(
                session, f"{base}/api/alerts?provider=Near%20expiry", lambda body: body["alerts"]
            )
            [alert] = alerts["alerts"]
            assert (alert["kind"], alert["severity"]) == ("certificate", "critical")
            assert "days left" in alert["message"]
            provider = await poll(
                session, f"{base}/api/providers/Near%20expiry", lambda body: body["certificate"]
            )
            assert provider["status"] == "online"  # an expiring certificate still serves
            certificate = provider["certificate"]
            assert certificate["expires_at"] == https.not_after.isoformat().replace("+00:00", "Z")
            assert CERTIFICATE_DAYS_LEFT - 0.1 < certificate["days_left"] <= CERTIFICATE_DAYS_LEFT
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
            expected = (
                'cryptomon_certificate_expiry_timestamp_seconds{provider="Near expiry"}'
                f" {https.not_after.timestamp()}"
            )
            assert expected in metrics.splitlines()
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0


def live_config(standin: StandIn, https: Https, *, failing: bool) -> str:
    base = standin.url("")
    text = f"""
[[providers]]
name = "Node"
category = "rpc_nodes"
base_url = "{base}/rpc/node"
interval = "30s"
rpc = [{{ method = "eth_blockNumber" }}, {{ method = "eth_chainId" }}]
conditions = ["[BODY][1].result == 0x1"]
observe = {{ head = "[BODY][0].result" }}

[[providers]]
name = "Kraken"
category = "exchanges"
base_url = "{base}/kraken"
health_path = "/SystemStatus"
interval = "30s"
maintenance_when = ["[BODY].result.status == maintenance"]

[[providers]]
name = "Secure"
category = "market_data"
base_url = "{https.standin.url("")}"
health_path = "/binance"
interval = "30s"

[[providers]]
name = "Keyed"
category = "news"
base_url = "{base}"
interval = "30s"
api_key_env = "CRYPTOMON_TEST_UNSET_KEY"
api_key_query = "key"
"""
    if failing:
        text += f"""
[[providers]]
name = "Etherscan V1"
category = "blockchain_explorers"
base_url = "{base}/etherscan/api"
interval = "30s"
conditions = ["[BODY].status == 1"]
"""
    return text


async def test_check_config_live_probes_every_provider_once_and_says_what_each_answered(
    standin: StandIn, https: Https, tmp_path: Path
) -> None:
    config = tmp_path / "live.toml"
    config.write_text(live_config(standin, https, failing=True))
    code, out, err = await cli("check-config", "--live", str(config), ca_file=https.ca_file)
    assert code == 1, (out, err)
    lines = out.splitlines()
    # The static listing first, with each probe's conditions.
    assert "      must hold:      [BODY][1].result == 0x1" in lines
    assert "      maintenance if: [BODY].result.status == maintenance" in lines
    assert "      observe head = [BODY][0].result" in lines
    # Then one block per probe.
    node = next(line for line in lines if line.startswith("ok   Node  health POST /"))
    assert "HTTP 200  success" in node
    assert "       held: [BODY][1].result == 0x1  (saw 0x1)" in lines
    assert any(line.startswith("       observed: head = ") for line in lines)
    kraken = next(line for line in lines if " Kraken  " in line and "HTTP" in line)
    assert kraken.startswith("ok   ")  # a provider declaring maintenance tells the truth
    assert "HTTP 200  maintenance" in kraken
    assert "       maintenance: [BODY].result.status == maintenance  (saw maintenance)" in lines
    secure = next(line for line in lines if " Secure  " in line)
    assert secure.startswith("ok   ")
    assert "       rate limit headers: x-mbx-used-weight-1m: 37" in lines
    assert "       TLS certificate: 2 days left" in lines
    failing = next(line for line in lines if " Etherscan V1  " in line)
    assert failing.startswith("FAIL ")
    assert "       FAILED: [BODY].status == 1  (saw 0)" in lines
    assert "Keyed  skipped: set CRYPTOMON_TEST_UNSET_KEY to probe it" in lines
    assert lines[-1] == "4 providers probed (4 probes), 1 probes failing, 1 skipped"

    config.write_text(live_config(standin, https, failing=False))
    code, out, err = await cli("check-config", "--live", str(config), ca_file=https.ca_file)
    assert code == 0, (out, err)
    assert out.splitlines()[-1] == "3 providers probed (3 probes), 0 probes failing, 1 skipped"
