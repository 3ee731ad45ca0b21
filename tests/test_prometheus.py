"""/metrics as Prometheus's own tool reads it, and the rules and dashboard in deploy/.

`promtool` (Debian's `prometheus` package; `.ci/run` installs it) checks a live service's
/metrics (`python -m cryptomon --demo` in a subprocess, once it has probed its simulated
providers, and the real app serving a provider whose name needs escaping), the alerting
rules in deploy/prometheus/alerts.yml and their unit tests (alerts_test.yml), and the
PromQL of the Grafana dashboard (deploy/grafana/cryptomon.json). Every metric name the
rules and the dashboard use must be one the live service exposes: the demo's, or (the
regional families, which a service without regions does not export) the real app's over a
log of probes from two regions. Without promtool the tests that need it skip; with CI=true
they fail (tests/ci.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: schemathesis, in the test extra, depends on it
from ci import IN_CI
from pytest_aiohttp import AiohttpClient
from standins import closed_port
from test_dashboard import Server, ThreadedService, free_port

from cryptomon import __version__
from cryptomon.config import load_config
from cryptomon.events.types import ProbeRecorded, RegionLost
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "cryptomon.json"
# Samples the demo's /metrics has once every kind of simulated provider has been probed.
DEMO_READY = (
    'cryptomon_probe_duration_seconds_count{provider="Healthy"}',
    'cryptomon_chain_head_block{chain="demo",',
    'cryptomon_quote_price{pair="BTC-USD",',
    'cryptomon_rate_limit_usage_ratio{provider="RateLimited"}',
)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed: install Debian's `prometheus` package"
        if IN_CI:
            pytest.fail(f"{message}; CI must check the metrics and rules", pytrace=False)
        pytest.skip(message)
    return found


def run_promtool(
    promtool: str, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> str:
    """promtool's output; a failure (a lint problem included) fails the test with it."""
    done = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text: str = response.read().decode()
    return text


@pytest.fixture(scope="module")
def demo_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`/metrics` of `python -m cryptomon --demo` once it has probed every kind of provider."""
    port = free_port()
    database = tmp_path_factory.mktemp("demo") / "demo.db"
    server = Server(["--demo", "--db", str(database), "--port", str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            text = scrape(f"http://127.0.0.1:{port}/metrics")
            missing = [sample for sample in DEMO_READY if sample not in text]
            if not missing:
                break
            assert time.monotonic() < deadline, f"never probed: {missing}\n{text}"
            time.sleep(0.2)  # the demo probes every few seconds: poll with a deadline
        yield text
    finally:
        server.stop()


@pytest.fixture(scope="module")
def regional_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`/metrics` of the real app over a log of probes from two regions, one of which
    then stopped reporting."""
    directory = tmp_path_factory.mktemp("regions")
    config = directory / "cryptomon.toml"
    config.write_text(
        '[[providers]]\nname = "Edge"\ncategory = "exchanges"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1h"\n'
    )
    settings = Settings.from_config(
        load_config(config), database=directory / "x.db", environ={}, probing=False
    )
    service = ThreadedService(settings)
    try:
        now = time.time() - 60
        service.append(
            ProbeRecorded("Edge", "health", "/", "success", now, 80.0, 200, region="eu-west"),
            *(
                ProbeRecorded("Edge", "health", "/", "timeout", now + n, region="us-east")
                for n in range(1, 4)
            ),
        )
        service.call(
            service.app[STORE].append("region:us-east", [RegionLost("us-east", "b", now + 5)])
        )
        deadline = time.monotonic() + 10
        while 'cryptomon_region_reporting{region="us-east"} 0' not in (
            text := scrape(f"{service.url}/metrics")
        ):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        yield text
    finally:
        service.stop()


def samples(text: str) -> dict[str, float]:
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def exposed_names(text: str) -> set[str]:
    """Every series name the text declares, a histogram's `_bucket`, `_sum` and `_count`."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            names |= {name + suffix for suffix in suffixes}
    return names


# ---- /metrics --------------------------------------------------------------------


def test_promtool_finds_no_problem_in_a_live_services_metrics(
    promtool: str, demo_metrics: str
) -> None:
    assert run_promtool(promtool, "check", "metrics", stdin=demo_metrics) == ""


def test_promtool_finds_no_problem_in_regional_metrics(
    promtool: str, regional_metrics: str
) -> None:
    assert 'cryptomon_probes_total{provider="Edge",region="us-east",kind="health",' in (
        regional_metrics
    )
    assert run_promtool(promtool, "check", "metrics", stdin=regional_metrics) == ""


def test_the_metrics_have_the_process_and_runtime_families(demo_metrics: str) -> None:
    got = samples(demo_metrics)
    assert got[f'cryptomon_build_info{{version="{__version__}"}}'] == 1
    assert got["process_cpu_seconds_total"] > 0
    assert got["process_resident_memory_bytes"] > 10 * 1024 * 1024  # a Python service
    assert got["process_virtual_memory_bytes"] >= got["process_resident_memory_bytes"]
    assert 0 < got["process_open_fds"] < got["process_max_fds"]
    # Started this test's minute or so ago (the service probed for a while since).
    assert time.time() - 300 < got["process_start_time_seconds"] < time.time()
    assert any(name.startswith("python_info{implementation=") for name in got)
    assert got['python_gc_collections_total{generation="0"}'] > 0
    for name in exposed_names(demo_metrics):
        assert "_ms" not in name and "latency" not in name, name


async def test_promtool_accepts_label_values_that_need_escaping(
    promtool: str, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    config = tmp_path / "cryptomon.toml"
    config.write_text(
        '[[providers]]\nname = "Say \\"hi\\" \\\\ back"\ncategory = "news"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1h"\n'
    )
    settings = Settings.from_config(
        load_config(config), database=tmp_path / "x.db", environ={}, probing=False
    )
    client = await aiohttp_client(create_app(settings))
    async with client.post("/api/scheduler/trigger/health_checks") as response:
        assert response.status == 200
    async with asyncio.timeout(5):
        await client.app[READ_MODELS].wait_for(client.app[STORE].head)
    async with client.get("/metrics") as response:
        text = await response.text()
    escaped = 'provider="Say \\"hi\\" \\\\ back"'
    assert f"cryptomon_provider_up{{{escaped}}} 0\n" in text
    assert f'cryptomon_probes_total{{{escaped},kind="health",outcome="failed"}} 1\n' in text
    assert run_promtool(promtool, "check", "metrics", stdin=text) == ""


# ---- deploy/prometheus/alerts.yml --------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_alerting_rules_pass_promtool(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_every_alert_fires_in_the_rules_unit_tests(promtool: str) -> None:
    alerts = {rule["alert"] for rule in alert_rules()}
    assert {
        "CryptomonProviderDown",
        "CryptomonRateLimitHigh",
        "CryptomonNodeLagging",
        "CryptomonCertificateExpiringSoon",
        "CryptomonEventLogStalled",
        "CryptomonProviderDownInRegion",
        "CryptomonRegionNotReporting",
    } <= alerts
    tested = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tested
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == alerts
    run_promtool(promtool, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)


def test_the_alerting_rules_use_only_metrics_the_service_exposes(
    demo_metrics: str, regional_metrics: str
) -> None:
    exposed = exposed_names(demo_metrics) | exposed_names(regional_metrics)
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exposed, (rule["alert"], used - exposed)


# ---- deploy/grafana/cryptomon.json ---------------------------------------------------

# Words in PromQL that are neither a function (those are followed by a parenthesis) nor a
# metric name.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    | {"group_left", "group_right"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (promtool has checked its syntax)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    # Label lists of aggregations and vector matching.
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        followed_by = expr[match.end() :].lstrip()[:1]
        if match.group() not in KEYWORDS and followed_by != "(":
            names.add(match.group())
    return names


def dashboard_queries() -> dict[str, str]:
    """Each PromQL expression of the dashboard (its panels' and its variables'), by where
    it is, with Grafana's variables replaced by values PromQL can parse."""
    dashboard = json.loads(DASHBOARD.read_text())

    def panels(within: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in within:
            yield panel
            yield from panels(panel.get("panels", []))

    queries = {
        f"panel {panel['title']!r} {target['refId']}": target["expr"]
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
    }
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert found, variable
            queries[f"variable {variable['name']}"] = found.group(1)

    def value(match: re.Match[str]) -> str:
        # Intervals are durations; the others are multi-value variables, in regex matchers.
        return "5m" if match.group(1).startswith("__") else ".*"

    return {where: re.sub(r"\$\{?(\w+)\}?", value, expr) for where, expr in queries.items()}


def test_the_dashboards_queries_are_promql_on_metrics_the_service_exposes(
    promtool: str, demo_metrics: str, regional_metrics: str, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    queries = dashboard_queries()
    assert len(queries) >= 20
    # promtool parses PromQL in rule files: each query as a recording rule (JSON is YAML).
    rules = tmp_path / "dashboard_rules.yml"
    records = [
        {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries.values())
    ]
    rules.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": records}]}))
    run_promtool(promtool, "check", "rules", str(rules))
    exposed = exposed_names(demo_metrics) | exposed_names(regional_metrics)
    for where, expr in queries.items():
        used = metric_names(expr)
        assert used, where
        assert used <= exposed, (where, used - exposed)
