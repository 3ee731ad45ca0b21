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
from datetime import UTC, datetime
from importlib import resources

import pytest
from croniter import croniter

from cryptomon.config import ProviderConfig, load_config
from cryptomon.probing.monitor import COLLECTION_JOBS

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
