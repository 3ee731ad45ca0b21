"""The bundled catalogue against its providers' documented limits and quotas.

Every provider sharing a key spends that key's allowance, so monthly use is summed per
key (a keyless provider is a pool of its own, by name): health probes from `interval`
or `cron`, plus each collection at the interval of the collection job its category
runs on. Per-window limits are checked the same way, worst case: every schedule of the
pool fires as often as it can inside one `rate_limit.per` window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
from croniter import croniter

from cryptomon.config import ProviderConfig, load_config, parse_uint
from cryptomon.config.conditions import Answer, parse_observation
from cryptomon.probing.monitor import COLLECTION_JOBS
from cryptomon.projections.chains import CHAIN_DEFAULTS
from cryptomon.projections.quotes import QUOTE_WINDOW_SECONDS, as_price, as_time

DAY = 86400.0
MONTH = 30 * DAY
# Cron fires are counted from here (a Monday, 00:00 UTC).
EPOCH = datetime(2026, 1, 5, tzinfo=UTC).timestamp()

# Documented free-tier allowances, in requests per 30 days, keyed by pool (the key's
# environment variable, or a keyless provider's name). Where sources disagree the
# lower figure is used.
MONTHLY_QUOTAS: dict[str, int] = {
    # Basic plan: 10,000 credits a month (some sources say 15,000). Only Fear & Greed
    # spends credits (/v1/key/info costs none), but every call is counted here.
    # https://coinmarketcap.com/api/pricing/
    "COINMARKETCAP_API_KEY": 10_000,
    # Developer plan: about 100 requests a month (secondhand: public integrations).
    # https://cryptopanic.com/developers/api/
    "CRYPTOPANIC_API_KEY": 100,
    # Free plan: 200 credits a day. https://newsdata.io/documentation/api-credit-limits
    "NEWSDATA_API_KEY": 200 * 30,
    # Without a key: 1,440 requests a day. https://blockchair.com/api/docs
    "Blockchair": 1_440 * 30,
    # Free plan: 20,000 requests a month.
    # https://docs.coinpaprika.com/api-reference/rest-api/introduction
    "CoinPaprika": 20_000,
    # Free plan: 100,000 calls a day, across all of an account's keys.
    # https://docs.etherscan.io/resources/rate-limits
    "ETHERSCAN_API_KEY": 100_000 * 30,
}


def catalogue() -> tuple[ProviderConfig, ...]:
    return tuple(p for p in load_config(None).providers if p.enabled)


def pool(provider: ProviderConfig) -> str:
    return provider.api_key_env or provider.name


def pools() -> dict[str, list[ProviderConfig]]:
    grouped: dict[str, list[ProviderConfig]] = {}
    for provider in catalogue():
        grouped.setdefault(pool(provider), []).append(provider)
    return grouped


def cron_fires(expression: str, start: float, seconds: float) -> list[float]:
    """The moments a cron expression fires in (start, start + seconds]."""
    fires = []
    schedule = croniter(expression, start)
    while (moment := float(schedule.get_next(float))) <= start + seconds:
        fires.append(moment)
    return fires


def collection_interval(provider: ProviderConfig) -> float | None:
    """How often this provider's collections run: the interval of its category's job."""
    for categories, interval in COLLECTION_JOBS.values():
        if provider.category in categories:
            return interval
    return None


def monthly_use(provider: ProviderConfig) -> int:
    if provider.cron is not None:
        health = len(cron_fires(provider.cron, EPOCH, MONTH))
    else:
        assert provider.interval_seconds is not None, provider.name
        health = math.ceil(MONTH / provider.interval_seconds)
    every = collection_interval(provider)
    collections = 0 if every is None else len(provider.collections) * math.ceil(MONTH / every)
    return health + collections


def most_in_window(interval: float, window: float) -> int:
    """The most fires of a fixed-rate schedule inside any window of that length."""
    return math.ceil(window / interval)


def most_cron_fires_in_window(expression: str, window: float) -> int:
    fires = cron_fires(expression, EPOCH, MONTH + window)
    most = 0
    first = 0
    for last, moment in enumerate(fires):
        while moment - fires[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def worst_case_in_window(provider: ProviderConfig, window: float) -> int:
    if provider.cron is not None:
        health = most_cron_fires_in_window(provider.cron, window)
    else:
        assert provider.interval_seconds is not None, provider.name
        health = most_in_window(provider.interval_seconds, window)
    every = collection_interval(provider)
    collections = 0 if every is None else len(provider.collections) * most_in_window(every, window)
    return health + collections


def test_the_schedule_counts_are_what_they_claim() -> None:
    assert len(cron_fires("0 */12 * * *", EPOCH, MONTH)) == 60
    assert len(cron_fires("*/10 * * * *", EPOCH, DAY)) == 144
    assert most_cron_fires_in_window("*/10 * * * *", 15 * 60) == 2
    assert most_cron_fires_in_window("0 * * * *", 60) == 1
    assert most_in_window(30, 60) == 2
    assert most_in_window(30, 1) == 1


@pytest.mark.parametrize("key", sorted(MONTHLY_QUOTAS))
def test_monthly_use_of_each_key_is_within_its_free_quota(key: str) -> None:
    providers = pools()[key]
    use = {p.name: monthly_use(p) for p in providers}
    assert sum(use.values()) <= MONTHLY_QUOTAS[key], use


def test_every_quota_names_a_pool_the_catalogue_uses() -> None:
    unused = set(MONTHLY_QUOTAS) - set(pools())
    assert not unused, f"quotas for pools no provider uses (a typo?): {sorted(unused)}"


def test_probes_in_each_rate_limit_window_stay_within_it() -> None:
    """Worst case: all of a pool's schedules at their busiest in one window."""
    over = {}
    grouped = pools()
    for provider in catalogue():
        if provider.rate_limit is None:
            continue
        window = provider.rate_limit.per_seconds
        probes = sum(worst_case_in_window(p, window) for p in grouped[pool(provider)])
        if probes > provider.rate_limit.requests:
            over[provider.name] = (probes, provider.rate_limit.requests, provider.rate_limit.per)
    assert not over, over


def test_cron_providers_with_monthly_quotas_leave_room() -> None:
    """The tightest quota: CryptoPanic's ~100 a month, even in a 31-day month."""
    (provider,) = pools()["CRYPTOPANIC_API_KEY"]
    assert provider.cron is not None
    assert len(cron_fires(provider.cron, EPOCH, 31 * DAY)) <= 100


def test_every_entry_names_its_docs_and_every_limit_its_source() -> None:
    for provider in load_config(None).providers:
        assert provider.docs is not None, provider.name
        assert provider.docs.startswith("https://"), provider.name
        if provider.rate_limit is not None:
            source = provider.rate_limit.source
            assert source == "unverified" or (source or "").startswith("https://"), provider.name


def provider_blocks(text: str) -> dict[str, str]:
    """Each [[providers]] block of the catalogue's text (with its collections), by name."""
    blocks = {}
    for block in re.split(r"^\[\[providers\]\]$", text, flags=re.MULTILINE)[1:]:
        name = re.search(r'^name = "([^"]+)"$', block, flags=re.MULTILINE)
        assert name is not None, block
        blocks[name.group(1)] = block
    return blocks


def test_an_entry_without_a_rate_limit_says_none_is_published() -> None:
    catalogue = resources.files("cryptomon.config").joinpath("catalogue.toml")
    text = catalogue.read_text(encoding="utf-8")
    blocks = provider_blocks(text)
    for provider in load_config(None).providers:
        if provider.rate_limit is None:
            comments = [line for line in blocks[provider.name].splitlines() if line.startswith("#")]
            assert any("published" in line for line in comments), provider.name


def test_keys_shared_by_several_providers() -> None:
    grouped = pools()
    assert {p.name for p in grouped["ETHERSCAN_API_KEY"]} == {"Etherscan", "BscScan"}
    assert {p.name for p in grouped["COINMARKETCAP_API_KEY"]} == {
        "CoinMarketCap",
        "CoinMarketCap Fear & Greed",
    }


# ---- chains and quotes --------------------------------------------------------------

# The chains and pairs with enough keyless providers that one can be told wrong.
CHAINS_WITH_THREE_NODES = ("ethereum", "bitcoin", "solana")
PAIRS_WITH_FOUR_SOURCES = ("BTC-USD",)


def keyless_members(attribute: str, group: str, observed: str) -> list[str]:
    return [
        p.name
        for p in catalogue()
        if getattr(p, attribute) == group and observed in p.observed and p.skip_reason({}) is None
    ]


@pytest.mark.parametrize("chain", CHAINS_WITH_THREE_NODES)
def test_three_keyless_nodes_observe_the_head_of_each_main_chain(chain: str) -> None:
    nodes = keyless_members("chain", chain, "head")
    assert len(nodes) >= 3, nodes


@pytest.mark.parametrize("pair", PAIRS_WITH_FOUR_SOURCES)
def test_four_keyless_sources_quote_the_main_pair(pair: str) -> None:
    sources = keyless_members("quote", pair, "price")
    assert len(sources) >= 4, sources


def observing_probes(provider: ProviderConfig, name: str) -> list[float]:
    """How often each probe of the provider that observes `name` runs, in seconds."""
    every = []
    if name in provider.observe:
        assert provider.interval_seconds is not None, provider.name
        every.append(provider.interval_seconds)
    for collection in provider.collections:
        if name in collection.observe:
            interval = collection_interval(provider)
            assert interval is not None, provider.name
            every.append(interval)
    return every


def test_each_price_is_observed_often_enough_to_count_towards_the_median() -> None:
    for provider in catalogue():
        if provider.quote is not None:
            (every,) = observing_probes(provider, "price")
            assert every <= QUOTE_WINDOW_SECONDS, provider.name


def test_a_node_observes_its_head_on_one_probe() -> None:
    """The chains projection follows one probe's head per node (the last to observe it)."""
    for provider in catalogue():
        if provider.chain is not None:
            assert len(observing_probes(provider, "head")) == 1, provider.name


# Answers as each provider's documentation shows them (trimmed), keyed by provider and
# probe path (None: the health probe), with the values the catalogue should read.
DOCUMENTED_ANSWERS: dict[tuple[str, str | None], tuple[str, dict[str, object]]] = {
    ("CoinGecko", "/simple/price?ids=bitcoin,ethereum&vs_currencies=usd"): (
        '{"bitcoin": {"usd": 67187.34}, "ethereum": {"usd": 3521.1}}',
        {"price": 67187.34},
    ),
    ("Binance", "/ticker/price?symbol=BTCUSDT"): (
        '{"symbol": "BTCUSDT", "price": "67187.34000000"}',
        {"price": 67187.34},
    ),
    ("Kraken", "/Ticker?pair=XBTUSD"): (
        '{"error": [], "result": {"XXBTZUSD": {"a": ["30300.10000", "1", "1.000"],'
        ' "b": ["30300.00000", "1", "1.000"], "c": ["30303.20000", "0.00067643"],'
        ' "o": "30502.80000"}}}',
        {"price": 30303.2},
    ),
    ("Coinbase", "/products/BTC-USD/ticker"): (
        '{"ask": "6267.71", "bid": "6265.15", "volume": "53602.03940154",'
        ' "trade_id": 86326522, "price": "6268.48", "size": "0.00698254",'
        ' "time": "2020-03-20T00:22:57.833897Z"}',
        {"price": 6268.48, "price_time": 1584663777.833897},
    ),
    ("Bitfinex", "/ticker/tBTCUSD"): (
        "[10645, 73.93854271, 10647, 75.22266119, 731.60645389, 0.0738,"
        " 10644.00645389, 14480.89849423, 10766, 9889.1449809]",
        {"price": 10644.00645389},
    ),
    ("Blockchair", "/bitcoin/stats"): (
        '{"data": {"blocks": 840001, "best_block_height": 840000,'
        ' "best_block_hash": "0000000000000000000320283a032748cef8227873ff4872689bf23f1cda83a5"},'
        ' "context": {"code": 200}}',
        {"head": 840000},
    ),
    ("mempool.space", None): ("840000", {"head": 840000}),
    ("Blockstream", None): ("840000\n", {"head": 840000}),
    ("Solana RPC", ""): ('{"jsonrpc": "2.0", "result": 1234, "id": 1}', {"head": 1234}),
    ("Solana (PublicNode)", None): ('{"jsonrpc": "2.0", "result": 1234, "id": 1}', {"head": 1234}),
    ("Solana (OnFinality)", None): ('{"jsonrpc": "2.0", "result": 1234, "id": 1}', {"head": 1234}),
    ("Ethereum Beacon (PublicNode)", "/eth/v1/beacon/headers/head"): (
        '{"execution_optimistic": false, "finalized": false, "data": {"root": "0xcf8e",'
        ' "canonical": true, "header": {"message": {"slot": "1", "proposer_index": "1",'
        ' "parent_root": "0xcf8e", "state_root": "0xcf8e", "body_root": "0xcf8e"},'
        ' "signature": "0x1b66"}}}',
        {"head": 1},
    ),
    ("Ethereum (PublicNode)", None): (
        '[{"jsonrpc": "2.0", "id": 1, "result": "0x1312d00"},'
        ' {"jsonrpc": "2.0", "id": 2, "result": "0x1"}]',
        {"head": 20_000_000, "chain_id": 1},
    ),
    ("Ethereum (dRPC)", None): (
        '[{"jsonrpc": "2.0", "id": 1, "result": "0x1312d00"},'
        ' {"jsonrpc": "2.0", "id": 2, "result": "0x1"}]',
        {"head": 20_000_000, "chain_id": 1},
    ),
    ("Ethereum (Flashbots Protect)", None): (
        '{"jsonrpc": "2.0", "id": 1, "result": "0x1312d00"}',
        {"head": 20_000_000},
    ),
    ("Ethereum (Flashbots Protect)", ""): (
        '{"jsonrpc": "2.0", "id": 1, "result": "0x1"}',
        {"chain_id": 1},
    ),
    ("BSC (BNB Chain dataseed)", None): (
        '[{"jsonrpc": "2.0", "id": 1, "result": "0x2625a00"},'
        ' {"jsonrpc": "2.0", "id": 2, "result": "0x38"}]',
        {"head": 40_000_000, "chain_id": 56},
    ),
    ("Base (mainnet.base.org)", None): (
        '[{"jsonrpc": "2.0", "id": 1, "result": "0x1312d00"},'
        ' {"jsonrpc": "2.0", "id": 2, "result": "0x2105"}]',
        {"head": 20_000_000, "chain_id": 8453},
    ),
    ("Arbitrum One (arb1.arbitrum.io)", None): (
        '[{"jsonrpc": "2.0", "id": 1, "result": "0xbebc200"},'
        ' {"jsonrpc": "2.0", "id": 2, "result": "0xa4b1"}]',
        {"head": 200_000_000, "chain_id": 42161},
    ),
    ("TronGrid", None): (
        '{"blockID": "0000000003a1d5a4", "block_header": {"raw_data":'
        ' {"number": 60937636, "timestamp": 1712000000000}}}',
        {"head": 60937636},
    ),
    ("Aptos", "/"): (
        '{"chain_id": 1, "epoch": "7000", "ledger_version": "1000000000",'
        ' "oldest_ledger_version": "0", "ledger_timestamp": "1712000000000000",'
        ' "node_role": "full_node", "oldest_block_height": "0", "block_height": "300000000"}',
        {"head": 300_000_000},
    ),
}


def observed_in(text: str, observe: dict[str, str]) -> dict[str, object]:
    answer = Answer(status=200, response_time_ms=1.0, headers={}, body=text.encode())
    return {name: parse_observation(path).extract(answer) for name, path in observe.items()}


def test_the_observations_read_the_documented_answers() -> None:
    """Each probe that observes a value reads it from the answer the provider documents,
    as the chains and quotes projections then read it."""
    readers: dict[str, Callable[[Any], object]] = {
        "head": parse_uint,
        "chain_id": parse_uint,
        "price": as_price,
        "price_time": as_time,
    }
    checked = set()
    for provider in catalogue():
        probes = [(None, provider.observe)] + [(c.path, c.observe) for c in provider.collections]
        for path, observe in probes:
            if not observe:
                continue
            assert (provider.name, path) in DOCUMENTED_ANSWERS, (provider.name, path)
            text, expected = DOCUMENTED_ANSWERS[provider.name, path]
            observed = observed_in(text, observe)
            seen = {name: readers[name](value) for name, value in observed.items()}
            assert seen == expected, provider.name
            checked.add((provider.name, path))
    assert checked == set(DOCUMENTED_ANSWERS)


def test_each_evm_node_answers_its_chains_id() -> None:
    """The documented chain id of each node is the one its chain is judged against."""
    for (name, _), (_, expected) in DOCUMENTED_ANSWERS.items():
        if "chain_id" in expected:
            provider = next(p for p in catalogue() if p.name == name)
            assert provider.chain is not None
            assert CHAIN_DEFAULTS[provider.chain].chain_id == expected["chain_id"], name
