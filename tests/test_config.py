"""Configuration: the bundled catalogue, every kind of mistake, keys from the environment."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptomon.config import (
    CATEGORIES,
    ConfigError,
    ProviderConfig,
    describe_providers,
    load_config,
    mask_key,
    parse_duration,
)

PROVIDER = """
[[providers]]
name = "Example"
category = "market_data"
base_url = "https://api.example.com/v1"
health_path = "/ping"
interval = "30s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cryptomon.toml"
    path.write_text(text, encoding="utf-8")
    return path


def errors_for(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "\n".join(caught.value.errors)
    for error in caught.value.errors:
        assert error.startswith(f"{path}: ")
    return caught.value.errors


def only_error(tmp_path: Path, text: str) -> str:
    errors = errors_for(tmp_path, text)
    assert len(errors) == 1, errors
    return errors[0]


# --- the bundled catalogue ---------------------------------------------------


def test_bundled_catalogue_loads_with_every_category() -> None:
    config = load_config(None)
    assert config.source.endswith("catalogue.toml")
    assert len(config.providers) >= 30
    assert {p.category for p in config.providers} == set(CATEGORIES)
    for p in config.providers:
        assert p.url(p.health_path).startswith("https://"), p.name
        interval = p.interval_seconds
        assert p.cron is not None or (interval is not None and 30 <= interval <= 300), p.name


@pytest.mark.parametrize(
    ("name", "category", "health_url", "requests", "per_seconds"),
    [
        ("CoinGecko", "market_data", "https://api.coingecko.com/api/v3/ping", 10, 60),
        (
            "CoinMarketCap",
            "market_data",
            "https://pro-api.coinmarketcap.com/v1/key/info",
            30,
            60,
        ),
        (
            "Etherscan",
            "blockchain_explorers",
            "https://api.etherscan.io/v2/api?chainid=1&module=stats&action=ethsupply",
            3,
            1,
        ),
        (
            "BscScan",
            "blockchain_explorers",
            "https://api.etherscan.io/v2/api?chainid=56&module=stats&action=bnbsupply",
            3,
            1,
        ),
        (
            "TronScan",
            "blockchain_explorers",
            "https://apilist.tronscanapi.com/api/system/status",
            60,
            60,
        ),
        (
            "CryptoPanic",
            "news",
            "https://cryptopanic.com/api/developer/v2/posts/?public=true",
            100,
            30 * 86400,
        ),
        ("NewsData", "news", "https://newsdata.io/api/1/latest?category=business", 200, 86400),
        ("Alternative.me", "sentiment", "https://api.alternative.me/fng/", 60, 60),
        (
            "CryptoCompare",
            "market_data",
            "https://min-api.cryptocompare.com/data/price?fsym=BTC&tsyms=USD",
            250,
            3600,
        ),
    ],
)
def test_catalogue_keeps_the_seed_providers(
    name: str, category: str, health_url: str, requests: int, per_seconds: float
) -> None:
    by_name = {p.name: p for p in load_config(None).providers}
    p = by_name[name]
    assert (p.category, p.url(p.health_path)) == (category, health_url)
    assert p.rate_limit is not None
    assert (p.rate_limit.requests, p.rate_limit.per_seconds) == (requests, per_seconds)
    assert p.timeout_seconds == 10


def test_catalogue_places_seed_keys_where_the_providers_expect_them() -> None:
    by_name = {p.name: p for p in load_config(None).providers}
    auth = {name: by_name[name].request_auth("k3y") for name in by_name}
    assert auth["CoinMarketCap"] == ({"X-CMC_PRO_API_KEY": "k3y"}, {})
    assert auth["CoinMarketCap Fear & Greed"] == ({"X-CMC_PRO_API_KEY": "k3y"}, {})
    assert auth["Etherscan"] == ({}, {"apikey": "k3y"})
    assert auth["BscScan"] == ({}, {"apikey": "k3y"})
    assert auth["TronScan"] == ({"TRON-PRO-API-KEY": "k3y"}, {})
    assert auth["TronGrid"] == ({"TRON-PRO-API-KEY": "k3y"}, {})
    assert auth["CryptoPanic"] == ({}, {"auth_token": "k3y"})
    assert auth["NewsData"] == ({}, {"apikey": "k3y"})
    assert auth["CryptoCompare"] == ({"authorization": "Apikey k3y"}, {})
    # BscScan moved to Etherscan V2: one Etherscan key serves both.
    assert by_name["BscScan"].api_key_env == by_name["Etherscan"].api_key_env
    for name in ("CoinMarketCap", "CryptoCompare", "Etherscan", "BscScan", "CryptoPanic"):
        assert by_name[name].key_status({}) == "unconfigured", name
        assert by_name[name].skip_reason({}) is not None, name
    for name in ("CoinGecko", "Alternative.me", "Ethereum (PublicNode)"):
        assert by_name[name].key_status({}) == "not_needed"
    # TronGrid is probed without its key until one is set.
    assert by_name["TronGrid"].key_status({}) == "optional"
    assert by_name["TronGrid"].skip_reason({}) is None
    assert by_name["TronGrid"].key_status({"TRONGRID_API_KEY": "k3y"}) == "configured"


def test_catalogue_rpc_nodes_observe_their_head_and_chain_id() -> None:
    chains = {
        "Ethereum (PublicNode)": "ethereum",
        "Ethereum (dRPC)": "ethereum",
        "BSC (BNB Chain dataseed)": "bsc",
        "Base (mainnet.base.org)": "base",
        "Arbitrum One (arb1.arbitrum.io)": "arbitrum",
    }
    by_name = {p.name: p for p in load_config(None).providers}
    for name, chain in chains.items():
        p = by_name[name]
        assert (p.category, p.chain) == ("rpc_nodes", chain)
        assert p.http_method == "POST"
        assert [call["method"] for call in p.json_body] == ["eth_blockNumber", "eth_chainId"]
        assert p.observe == {"head": "[BODY][0].result", "chain_id": "[BODY][1].result"}
        # The chain id is judged by the chains projection (wrong_chain), not a condition.
        assert p.conditions == ()
    # Flashbots refuses batches: one call for the head, the chain id in a collection.
    flashbots = by_name["Ethereum (Flashbots Protect)"]
    assert flashbots.chain == "ethereum"
    assert flashbots.json_body["method"] == "eth_blockNumber"
    assert flashbots.observe == {"head": "[BODY].result"}
    (chain_id,) = flashbots.collections
    assert chain_id.json_body["method"] == "eth_chainId"
    assert chain_id.observe == {"chain_id": "[BODY].result"}
    assert chain_id.conditions == ()


def test_catalogue_maintenance_and_body_checks() -> None:
    by_name = {p.name: p for p in load_config(None).providers}
    assert by_name["Bitfinex"].maintenance_when == ("[BODY][0] == 0",)
    assert by_name["Kraken"].maintenance_when
    assert "[BODY].status == 1" in by_name["Etherscan"].conditions
    assert "[BODY] == ok" in by_name["Solana RPC"].conditions
    assert by_name["TronGrid"].http_method == "POST"
    assert (
        by_name["Aptos"].url(by_name["Aptos"].health_path).endswith("/-/healthy?duration_secs=30")
    )


# --- a user's file -----------------------------------------------------------


def test_full_file_round_trips_into_typed_values(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[server]
host = "0.0.0.0"
port = 8080
api_token_env = "MY_TOKEN"
cors_origins = ["https://dash.example.com"]
[storage]
database = "/var/lib/cryptomon.db"
[websocket]
status_interval = "500ms"
heartbeat_interval = "1m"
[monitoring]
offline_after_failures = 5
online_after_successes = 1
[[providers]]
name = "Scan"
category = "blockchain_explorers"
base_url = "https://scan.example.com/api/"
health_path = "?module=stats"
cron = "*/5 * * * *"
timeout = "5s"
degraded_latency = "1500ms"
rate_limit = { requests = 5, per = "1s" }
api_key_env = "SCAN_KEY"
api_key_query = "apikey"
enabled = false
[[providers.collections]]
path = "/blocks?limit=1"
expect_non_empty = true
""",
        )
    )
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8080)
    assert config.server.cors_origins == ("https://dash.example.com",)
    assert config.storage.database == "/var/lib/cryptomon.db"
    assert config.websocket.status_interval_seconds == 0.5
    assert config.websocket.heartbeat_interval_seconds == 60
    assert config.monitoring.offline_after_failures == 5
    (p,) = config.providers
    assert (p.cron, p.interval, p.interval_seconds) == ("*/5 * * * *", None, None)
    assert p.schedule_text == "cron */5 * * * *"
    assert (p.timeout_seconds, p.degraded_latency_seconds) == (5, 1.5)
    # The trailing slash of base_url is kept for a query, dropped for a path.
    assert p.url(p.health_path) == "https://scan.example.com/api/?module=stats"
    assert p.url(p.collections[0].path) == "https://scan.example.com/api/blocks?limit=1"
    assert p.collections[0].expect_non_empty


def test_defaults_and_the_bundled_providers_when_a_file_names_none(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\nport = 9000\n"))
    assert config.server.port == 9000
    assert config.server.host == "127.0.0.1"
    assert config.storage.database == "data/cryptomon.db"
    assert config.websocket.status_interval_seconds == 10
    assert config.monitoring.online_after_successes == 2
    assert config.providers == load_config(None).providers
    assert config.source == str(tmp_path / "cryptomon.toml")
    assert load_config(write(tmp_path, "providers = []\n")).providers == ()


def test_provider_defaults(tmp_path: Path) -> None:
    (p,) = load_config(write(tmp_path, PROVIDER)).providers
    assert (p.timeout_seconds, p.degraded_latency_seconds, p.interval_seconds) == (10, 2, 30)
    assert p.schedule_text == "every 30s"
    assert p.enabled and p.rate_limit is None and p.collections == ()
    assert p.url(p.health_path) == "https://api.example.com/v1/ping"


# --- errors ------------------------------------------------------------------


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    error = only_error(tmp_path, '[server]\nport = 7860\nhost = "unterminated\n')
    assert "invalid TOML" in error
    assert "line 3" in error


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.toml")


def test_unknown_keys_name_the_allowed_ones(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path, "colour = 1\n[server]\nprot = 1\n" + PROVIDER + "intervall = '5s'\n"
    )
    assert errors[0].endswith(
        "colour: unknown key; expected one of: server, instance, storage, websocket, monitoring,"
        " providers, notifications, chains, quotes, maintenance, status_page"
    )
    assert "server.prot: unknown key" in errors[1]
    assert "host, port" in errors[1]
    assert "providers[0].intervall (provider 'Example'): unknown key" in errors[2]


def test_unknown_key_in_a_nested_table(tmp_path: Path) -> None:
    error = only_error(
        tmp_path, PROVIDER + "rate_limit = { requests = 1, per = '1s', burst = 2 }\n"
    )
    assert "providers[0].rate_limit.burst (provider 'Example'): unknown key" in error


def test_wrong_types(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        "[server]\nport = '7860'\n" + PROVIDER + "enabled = 'yes'\ntimeout = 10\n",
    )
    assert "server.port: Expected `int`, got `str`" in errors[0]
    assert "providers[0].enabled (provider 'Example'): Expected `bool`, got `str`" in errors[1]
    assert "providers[0].timeout (provider 'Example'): Expected `str`, got `int`" in errors[2]
    assert 'a duration such as "30s"' in errors[2]


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert "server: expected a table, got int" in only_error(tmp_path, "server = 5\n")


def test_bad_durations(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        "[websocket]\nheartbeat_interval = '0s'\n"
        + PROVIDER
        + "degraded_latency = 'fast'\nrate_limit = { requests = 10, per = '1 minute' }\n",
    )
    assert "websocket.heartbeat_interval: '0s' is not a usable duration" in errors[0]
    assert (
        "providers[0].degraded_latency (provider 'Example'): 'fast' is not a duration"
        in (errors[1])
    )
    assert "providers[0].rate_limit.per (provider 'Example'): '1 minute'" in errors[2]
    assert '"500ms", "30s" or "5m"' in errors[2]


def test_bad_cron(tmp_path: Path) -> None:
    text = PROVIDER.replace('interval = "30s"', 'cron = "*/5 * * *"')
    error = only_error(tmp_path, text)
    assert "providers[0].cron (provider 'Example'): '*/5 * * *' is not a cron expression" in error


def test_interval_and_cron_both_or_neither(tmp_path: Path) -> None:
    both = only_error(tmp_path, PROVIDER + "cron = '*/5 * * * *'\n")
    assert "providers[0].cron (provider 'Example'): set interval or cron, not both" in both
    neither = only_error(tmp_path, PROVIDER.replace('interval = "30s"', ""))
    assert "providers[0].interval (provider 'Example'): missing: set interval" in neither


def test_duplicate_names_ignore_case(tmp_path: Path) -> None:
    error = only_error(tmp_path, PROVIDER + PROVIDER.replace('"Example"', '"EXAMPLE"'))
    assert "providers[1].name (provider 'EXAMPLE'): duplicate provider name" in error
    assert "providers[0] already uses it" in error


def test_base_url_must_be_http(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        PROVIDER.replace("https://api.example.com/v1", "ftp://api.example.com")
        + PROVIDER.replace('"Example"', '"Other"').replace(
            "https://api.example.com/v1", "api.example.com"
        ),
    )
    assert "providers[0].base_url (provider 'Example'): 'ftp://api.example.com'" in errors[0]
    assert "providers[1].base_url (provider 'Other'): 'api.example.com'" in errors[1]
    assert "http(s) URL" in errors[1]


def test_port_out_of_range(tmp_path: Path) -> None:
    assert "server.port: Expected `int` <= 65535" in only_error(
        tmp_path, "[server]\nport = 70000\n"
    )
    assert "server.port: Expected `int` >= 1" in only_error(tmp_path, "[server]\nport = 0\n")


def test_unknown_category_lists_the_allowed_ones(tmp_path: Path) -> None:
    error = only_error(tmp_path, PROVIDER.replace("market_data", "weather"))
    assert "providers[0].category (provider 'Example'): Invalid enum value 'weather'" in error
    assert "expected one of: " + ", ".join(CATEGORIES) in error


def test_missing_required_key(tmp_path: Path) -> None:
    error = only_error(tmp_path, PROVIDER.replace('category = "market_data"', ""))
    assert "providers[0].category (provider 'Example'): missing; this key is required" in error


def test_key_placement_rules(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        PROVIDER
        + "api_key_env = 'A_KEY'\n"
        + PROVIDER.replace('"Example"', '"Two"')
        + "api_key_header = 'x-key'\napi_key_query = 'key'\napi_key_env = 'B_KEY'\n"
        + PROVIDER.replace('"Example"', '"Three"')
        + "api_key_query = 'key'\napi_key_prefix = 'Bearer '\n",
    )
    assert errors == [
        f"{tmp_path / 'cryptomon.toml'}: providers[0].api_key_env (provider 'Example'): "
        "say where the key goes: set api_key_header or api_key_query",
        f"{tmp_path / 'cryptomon.toml'}: providers[1].api_key_query (provider 'Two'): "
        "set api_key_header or api_key_query, not both",
        f"{tmp_path / 'cryptomon.toml'}: providers[2].api_key_env (provider 'Three'): "
        "missing: name the environment variable that holds the key",
        f"{tmp_path / 'cryptomon.toml'}: providers[2].api_key_prefix (provider 'Three'): "
        "only applies to a key sent in api_key_header",
    ]


def test_a_key_pasted_as_the_env_name_is_not_echoed(tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    error = only_error(tmp_path, PROVIDER + f"api_key_env = '{secret}'\napi_key_query = 'k'\n")
    assert "providers[0].api_key_env (provider 'Example')" in error
    assert "NAME of an environment variable" in error
    assert secret not in error


def test_degraded_latency_must_be_below_timeout(tmp_path: Path) -> None:
    error = only_error(tmp_path, PROVIDER + "timeout = '2s'\ndegraded_latency = '2s'\n")
    assert "providers[0].degraded_latency (provider 'Example'): expected less than" in error


def test_cors_origins_are_origins(tmp_path: Path) -> None:
    error = only_error(tmp_path, "[server]\ncors_origins = ['https://ok.example/app']\n")
    assert "server.cors_origins: 'https://ok.example/app' is not an origin" in error


def test_all_errors_are_reported_across_providers_and_sections(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        "[server]\nport = 99999\n"
        + PROVIDER.replace('"30s"', '"30 seconds"')
        + "timeout = 'x'\n"
        + PROVIDER.replace('"Example"', '"Second"').replace("https://", "gopher://"),
    )
    assert len(errors) == 4, errors
    assert "server.port" in errors[0]
    assert "providers[0].interval (provider 'Example')" in errors[1]
    assert "providers[0].timeout (provider 'Example')" in errors[2]
    assert "providers[1].base_url (provider 'Second')" in errors[3]


# --- keys --------------------------------------------------------------------


def keyed(tmp_path: Path) -> ProviderConfig:
    text = PROVIDER + "api_key_env = 'EXAMPLE_KEY'\napi_key_header = 'authorization'\n"
    (p,) = load_config(write(tmp_path, text + "api_key_prefix = 'Bearer '\n")).providers
    return p


def test_key_is_read_from_the_environment_at_call_time(tmp_path: Path) -> None:
    p = keyed(tmp_path)
    environ: dict[str, str] = {}
    assert p.api_key(environ) is None
    assert p.key_status(environ) == "unconfigured"
    environ["EXAMPLE_KEY"] = " secret-value-1 \n"
    assert p.api_key(environ) == "secret-value-1"
    assert p.key_status(environ) == "configured"
    assert p.request_auth(p.api_key(environ)) == ({"authorization": "Bearer secret-value-1"}, {})
    assert p.request_auth(None) == ({}, {})
    # Nothing about the key lives on the struct.
    assert "secret-value-1" not in repr(p)


def test_empty_env_var_is_unconfigured(tmp_path: Path) -> None:
    p = keyed(tmp_path)
    assert p.key_status({"EXAMPLE_KEY": "  "}) == "unconfigured"
    assert p.skip_reason({"EXAMPLE_KEY": ""}) == "set EXAMPLE_KEY to probe it"


def test_mask_key() -> None:
    assert mask_key("abcdefgh") == "abcd…"
    assert mask_key("abcdefghijklmnop") == "abcd…"
    assert mask_key("abcdefg") == "***"
    assert mask_key("") == "***"


def test_describe_providers(tmp_path: Path) -> None:
    text = (
        PROVIDER
        + PROVIDER.replace('"Example"', '"Keyed"').replace('interval = "30s"', "cron = '0 * * * *'")
        + "api_key_env = 'KEYED_KEY'\napi_key_query = 'key'\n"
        + PROVIDER.replace('"Example"', '"Off"').replace("market_data", "news")
        + "enabled = false\n"
    )
    config = load_config(write(tmp_path, text))
    lines = describe_providers(config, {})
    assert [line.split() for line in lines] == [
        ["Example", "market_data", "every", "30s", "probed"],
        [
            "Keyed",
            "market_data",
            "cron",
            "0",
            "*",
            "*",
            "*",
            "*",
            "skipped:",
            "set",
            "KEYED_KEY",
            "to",
            "probe",
            "it",
        ],
        ["Off", "news", "every", "30s", "skipped:", "disabled"],
    ]
    # Columns line up: each category starts after the longest name and two spaces.
    assert [line[len("Example  ") :].split()[0] for line in lines] == [
        "market_data",
        "market_data",
        "news",
    ]
    assert describe_providers(config, {"KEYED_KEY": "k"})[1].endswith("probed")


# --- durations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1.5s", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "30", "s", "-5s", "0ms", "5 s", "5sec", "1e3s", "inf s", "9" * 400 + "s"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(sorted(UNITS)))
def test_generated_durations_round_trip(amount: int, unit: str) -> None:
    assert math.isclose(parse_duration(f"{amount}{unit}"), amount * UNITS[unit])


@given(st.text())
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert "duration" in str(exc)
    else:
        assert math.isfinite(seconds) and seconds > 0


def test_storage_retention_settings(tmp_path: Path) -> None:
    path = tmp_path / "storage.toml"
    path.write_text('[storage]\narchive_after = "30d"\nsnapshot_interval = "1m"\n')
    storage = load_config(path).storage
    assert storage.archive_after_seconds == 30 * 86_400
    assert storage.snapshot_interval_seconds == 60
    assert load_config(None).storage.archive_after_seconds is None
    path.write_text('[storage]\narchive_after = "forever"\n')
    with pytest.raises(ConfigError, match=r"storage\.archive_after"):
        load_config(path)


# --- chains and quotes ---------------------------------------------------------


def test_a_price_or_head_observed_on_a_collection_is_enough(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[[providers]]
name = "Exchange"
category = "exchanges"
base_url = "https://api.example.com"
health_path = "/ping"
interval = "30s"
quote = "BTC-USD"

[[providers.collections]]
path = "/ticker"
observe = { price = "[BODY].price" }

[[providers]]
name = "Node"
category = "rpc_nodes"
base_url = "https://rpc.example.com"
health_path = "/health"
interval = "30s"
chain = "ethereum"

[[providers.collections]]
path = ""
rpc = { method = "eth_blockNumber" }
observe = { head = "[BODY].result" }

[chains.ethereum]
lag_blocks = 5
stale_after = "2m"

[quotes]
deviation_percent = 1.5
""",
        )
    )
    exchange, node = config.providers
    assert (exchange.quote, exchange.observed) == ("BTC-USD", {"price"})
    assert (node.chain, node.observed) == ("ethereum", {"head"})
    assert config.chains["ethereum"].lag_blocks == 5
    assert config.quotes.deviation_percent == 1.5
    assert config.quotes.max_staleness_seconds == 60


def test_a_chain_needs_a_head_and_a_quote_a_price(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        """
[[providers]]
name = "Node"
category = "rpc_nodes"
base_url = "https://rpc.example.com"
interval = "30s"
rpc = { method = "eth_blockNumber" }
chain = "ethereum"
observe = { height = "[BODY].result" }

[[providers]]
name = "Exchange"
category = "exchanges"
base_url = "https://api.example.com"
interval = "30s"
quote = "BTC-USD"
observe = { last = "[BODY].price" }
""",
    )
    assert len(errors) == 2, errors
    assert "providers[0].chain (provider 'Node'): its head is compared" in errors[0]
    assert "providers[1].quote (provider 'Exchange'): the price is compared" in errors[1]


def test_bad_chain_and_quote_values_name_their_key(tmp_path: Path) -> None:
    errors = errors_for(
        tmp_path,
        """
[[providers]]
name = "Node"
category = "rpc_nodes"
base_url = "https://rpc.example.com"
interval = "30s"
chain = "Ethereum Mainnet"
observe = { head = "[BODY].result" }

[[providers]]
name = "Exchange"
category = "exchanges"
base_url = "https://api.example.com"
interval = "30s"
quote = "btc/usd"
observe = { price = "[BODY].price" }

[chains.ethereum]
chain_id = "0xZZ"
lag_blocks = -1
stale_after = "soon"

[chains."Not A Name"]
lag_blocks = 3

[quotes]
deviation_percent = 0
max_staleness = "a minute"
""",
    )
    expected = [
        "providers[0].chain (provider 'Node'): expected a chain name of lowercase letters",
        "providers[1].quote (provider 'Exchange'): expected a pair of upper-case symbols",
        "chains.ethereum.chain_id: expected a chain id: a number, or hexadecimal",
        "chains.ethereum.lag_blocks: Expected `int` >= 0",
        "chains.ethereum.stale_after: ",
        "chains.Not A Name: expected a chain name",
        "quotes.deviation_percent: Expected `float` > 0.0",
        "quotes.max_staleness: ",
    ]
    assert len(errors) == len(expected), errors
    for error in expected:
        assert any(error in line for line in errors), (error, errors)


def test_chains_must_be_a_table_of_chains(tmp_path: Path) -> None:
    error = only_error(tmp_path, 'chains = "ethereum"\n')
    assert error.endswith("chains: expected a table of chains ([chains.ethereum]), got a string")
