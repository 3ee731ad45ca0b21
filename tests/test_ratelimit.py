"""Rate-limit usage: threshold events, provider headers, back-off."""

from __future__ import annotations

from email.utils import formatdate

from cryptomon.probing.ratelimit import RateLimitTracker

NOW = 1_800_000_000.0


def test_events_only_when_a_threshold_is_crossed_either_way() -> None:
    tracker = RateLimitTracker("CoinGecko", limit=10, window_seconds=60)
    crossings = []
    for n in range(10):
        event = tracker.record_request(NOW + n)
        if event is not None:
            crossings.append((n + 1, event.percentage, event.reason))
    assert crossings == [
        (5, 50.0, "threshold_up"),
        (8, 80.0, "threshold_up"),
        (9, 90.0, "threshold_up"),
        (10, 100.0, "threshold_up"),
    ]
    # The window slides: at 65.5 s four of the ten are still in it, plus this one.
    falling = tracker.record_request(NOW + 65.5)
    assert falling is not None
    assert (falling.used, falling.percentage, falling.reason) == (5, 50.0, "threshold_down")
    assert tracker.record_request(NOW + 65.6) is None


def test_provider_headers_override_our_count_and_report_new_limits() -> None:
    tracker = RateLimitTracker("Kraken", limit=100, window_seconds=60)
    assert tracker.record_request(NOW) is None
    changes = tracker.observe_response(
        200,
        {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "30"},
        NOW + 0.1,
    )
    assert [c.reason for c in changes] == ["limit_reported", "threshold_up"]
    assert changes[-1].used == 17 and changes[-1].limit == 20
    assert changes[-1].percentage == 85.0
    assert tracker.reset_at == NOW + 30.1
    # The same figures again: nothing new to record.
    headers = {"x-ratelimit-limit": "20", "x-ratelimit-remaining": "3"}
    assert tracker.observe_response(200, headers, NOW + 0.2) == []


def test_binance_weight_header() -> None:
    tracker = RateLimitTracker("Binance", limit=6000, window_seconds=60)
    tracker.record_request(NOW)
    [change] = tracker.observe_response(200, {"X-MBX-USED-WEIGHT-1M": "5500"}, NOW)
    assert change.used == 5500 and change.percentage == 91.7


def test_429_with_retry_after_blocks_until_then() -> None:
    tracker = RateLimitTracker("CryptoCompare", limit=250, window_seconds=3600)
    tracker.record_request(NOW)
    [change] = tracker.observe_response(429, {"Retry-After": "7"}, NOW)
    assert change.reason == "blocked" and change.blocked_until == NOW + 7
    assert tracker.is_blocked(NOW + 6.9)
    assert not tracker.is_blocked(NOW + 7)


def test_retry_after_as_an_http_date_and_429_without_hints() -> None:
    tracker = RateLimitTracker("A", limit=None, window_seconds=60)
    [change] = tracker.observe_response(429, {"Retry-After": formatdate(NOW + 120)}, NOW)
    assert change.blocked_until == NOW + 120
    bare = RateLimitTracker("B", limit=None, window_seconds=60)
    [change] = bare.observe_response(429, {}, NOW)
    assert change.blocked_until == NOW + 60


def test_garbage_headers_are_ignored() -> None:
    tracker = RateLimitTracker("A", limit=10, window_seconds=60)
    headers = {"X-RateLimit-Limit": "lots", "Retry-After": "soon", "X-RateLimit-Reset": ""}
    assert tracker.observe_response(200, headers, NOW) == []
    assert tracker.limit == 10 and not tracker.is_blocked(NOW)
