"""The configuration of requests and checks: every expression parsed at load, every mistake
named with its file, provider, key and character, and the defaults a first file relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryptomon.config import ConfigError, describe_checks, load_config

PROVIDER = """
[[providers]]
name = "A"
category = "rpc_nodes"
base_url = "https://a.example"
interval = "30s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "checks.toml"
    path.write_text(text)
    return path


def errors(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert all(message.startswith(f"{path}: ") for message in caught.value.errors)
    return [message.removeprefix(f"{path}: ") for message in caught.value.errors]


def test_a_two_second_timeout_alone_is_valid_and_degrades_at_half_of_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PROVIDER + 'timeout = "2s"\n'))
    assert config.providers[0].degraded_latency_seconds == 1.0
    config = load_config(write(tmp_path, PROVIDER + 'timeout = "1500ms"\n'))
    assert config.providers[0].degraded_latency_seconds == 0.75
    # Files valid before keep their meaning: the 2 s default below a longer timeout.
    assert load_config(write(tmp_path, PROVIDER)).providers[0].degraded_latency_seconds == 2.0
    # One set by hand must still be below the timeout.
    assert errors(tmp_path, PROVIDER + 'timeout = "2s"\ndegraded_latency = "2s"\n') == [
        "providers[0].degraded_latency (provider 'A'): expected less than the timeout (2s)"
    ]


def test_every_bad_expression_is_named_with_its_key_and_character(tmp_path: Path) -> None:
    text = (
        PROVIDER
        + 'conditions = ["[STATUS] == 200", "[STATUS] 200"]\n'
        + 'maintenance_when = ["[FOO] == 1"]\n'
        + 'observe = { head = "[BODY].result ==" }\n'
        + '[[providers.collections]]\npath = "/x"\nconditions = ["len([BODY] > 0"]\n'
    )
    found = errors(tmp_path, text)
    keys = [message.split(" (provider 'A'): ")[0] for message in found]
    assert keys == [
        "providers[0].conditions[1]",
        "providers[0].maintenance_when[0]",
        "providers[0].observe.head",
        "providers[0].collections[0].conditions[0]",
    ]
    assert "expected an operator" in found[0] and "character 13" in found[0]
    assert "[FOO]" in found[1]
    assert "unclosed '(' at character 4" in found[3]
    [named] = errors(tmp_path, PROVIDER + 'observe = { "bad name" = "[BODY]" }\n')
    assert named.startswith(
        "providers[0].observe (provider 'A'): 'bad name' is not an observation name"
    )


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            'body = { a = 1 }\nrpc = { method = "eth_chainId" }\n',
            "providers[0].rpc (provider 'A'): set body or rpc, not both",
        ),
        (
            'method = "GET"\nrpc = { method = "eth_chainId" }\n',
            "providers[0].method (provider 'A'): a GET request carries no body",
        ),
        ("rpc = []\n", "providers[0].rpc (provider 'A'): an empty batch"),
        (
            'method = "DELETE"\n',
            "providers[0].method (provider 'A'): Invalid enum value 'DELETE'; expected one of:"
            " GET, POST, HEAD",
        ),
        (
            "api_key_optional = true\n",
            "providers[0].api_key_optional (provider 'A'): only applies with api_key_env",
        ),
        ('headers = { X-Key = "env:not a name" }\n', "providers[0].headers (provider 'A'):"),
        ('headers = { Host = "x" }\n', "providers[0].headers (provider 'A'): 'Host' is set by"),
        ('docs = "ftp://x"\n', "providers[0].docs (provider 'A'): 'ftp://x' is not an http(s)"),
        (
            'rate_limit = { requests = 1, per = "1s", source = "somewhere" }\n',
            "providers[0].rate_limit.source (provider 'A'):",
        ),
        (
            "rpc = { params = [] }\n",
            "providers[0].rpc.method (provider 'A'): missing; this key is required",
        ),
    ],
)
def test_request_mistakes_are_clear(tmp_path: Path, lines: str, expected: str) -> None:
    [message] = errors(tmp_path, PROVIDER + lines)
    assert message.startswith(expected), message


def test_a_collection_body_with_get_is_an_error_at_its_index(tmp_path: Path) -> None:
    text = PROVIDER + '[[providers.collections]]\npath = "/x"\nmethod = "HEAD"\nbody = [1]\n'
    [message] = errors(tmp_path, text)
    assert message.startswith("providers[0].collections[0].method (provider 'A'): a HEAD")


def test_certificate_thresholds_must_be_ordered(tmp_path: Path) -> None:
    text = '[monitoring]\ncertificate_warning = "2d"\ncertificate_critical = "3d"\n'
    assert errors(tmp_path, text) == [
        "monitoring.certificate_critical: expected less than certificate_warning (2d)"
    ]


def test_env_headers_and_optional_keys_decide_what_is_probed(tmp_path: Path) -> None:
    text = (
        PROVIDER
        + 'headers = { X-Node-Key = "env:NODE_KEY", Accept = "application/json" }\n'
        + PROVIDER.replace('"A"', '"B"')
        + 'api_key_env = "B_KEY"\napi_key_header = "X-Key"\napi_key_optional = true\n'
    )
    a, b = load_config(write(tmp_path, text)).providers
    assert a.skip_reason({}) == "set NODE_KEY to probe it"
    assert a.key_status({}) == "unconfigured"
    assert a.skip_reason({"NODE_KEY": "k"}) is None
    assert a.key_status({"NODE_KEY": "k"}) == "configured"
    headers, secrets = a.request_headers({"NODE_KEY": "k"})
    assert headers == {"X-Node-Key": "k", "Accept": "application/json"}
    assert secrets == ["k"]
    assert b.skip_reason({}) is None  # probed without its key
    assert b.key_status({}) == "optional"
    assert b.key_status({"B_KEY": "x"}) == "configured"


def test_rpc_builds_json_rpc_envelopes_and_posts_them(tmp_path: Path) -> None:
    text = (
        PROVIDER
        + 'rpc = [{ method = "eth_blockNumber" }, { method = "eth_getBalance", params = ["0x0",'
        ' "latest"] }]\n'
    )
    [provider] = load_config(write(tmp_path, text)).providers
    assert provider.http_method == "POST"
    assert provider.json_body == [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getBalance", "params": ["0x0", "latest"]},
    ]


def test_check_config_shows_every_probe_with_its_conditions(tmp_path: Path) -> None:
    text = (
        PROVIDER
        + 'rpc = { method = "eth_chainId" }\nconditions = ["[BODY].result == 0x1"]\n'
        + 'maintenance_when = ["[BODY].status == maintenance"]\n'
        + 'observe = { chain = "[BODY].result" }\n'
        + '[[providers.collections]]\npath = "/data"\nexpect_key = "price"\n'
        + '[[providers.collections]]\npath = "/list"\nexpect_non_empty = true\n'
        + '[[providers.collections]]\npath = "/plain"\n'
    )
    [provider] = load_config(write(tmp_path, text)).providers
    assert describe_checks(provider) == [
        "    health POST / JSON-RPC eth_chainId",
        "      must hold:      [BODY].result == 0x1",
        "      maintenance if: [BODY].status == maintenance",
        "      observe chain = [BODY].result",
        "    collection GET /data",
        "      must hold:      has([BODY].price) == true",
        "    collection GET /list",
        "      must hold:      len([BODY]) > 0",
    ]
