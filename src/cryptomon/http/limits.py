"""Per-client limits: requests a second (a token bucket per address) and open
live-feed connections per address. A client past them gets a 429 with
`Retry-After`, and nobody else notices.

A client's address is the connection's peer, or, when the peer is one of
`server.trusted_proxies`, the nearest address in X-Forwarded-For that is not."""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import Counter

from aiohttp import web

from cryptomon.http.errors import TooManyRequests

# Addresses not seen for this many refill periods are forgotten, so the table
# of buckets stays as small as the set of recent clients.
_FORGET_AFTER_FULL = 2.0
_PRUNE_ABOVE = 10_000


# Headers a proxy adds to say whom it forwards for.
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def _normal(address: str) -> str:
    """One spelling per address (`::1` for 0:0:0:0:0:0:0:1, 127.0.0.1 for
    ::ffff:127.0.0.1); anything else, such as a forged hop, as text kept short."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


# Every request's peer address, as `_normal` spells it: parsing it with ipaddress each
# time was 6 % of the service's time answering from the cache. A peer is a connection's
# address (at most 45 characters), so the memo stays small; forwarded hops, which a
# client writes, are not memoised.
_peer = functools.lru_cache(maxsize=4096)(_normal)


class ClientLimits:
    def __init__(
        self,
        per_second: float,
        burst: int,
        connections: int,
        trusted_proxies: tuple[str, ...] = (),
    ) -> None:
        self.per_second = per_second
        self.burst = float(burst)
        self.connections = connections
        self.trusted_proxies = frozenset(_normal(address) for address in trusted_proxies)
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self.open_connections: Counter[str] = Counter()
        self.refused = 0

    def wait_for_request(self, address: str, now: float | None = None) -> float:
        """0 when the request may go ahead (and is counted); else seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_second)
        if tokens < 1:
            self.refused += 1
            self._buckets[address] = (tokens, now)
            return (1 - tokens) / self.per_second
        self._buckets[address] = (tokens - 1, now)
        if len(self._buckets) > _PRUNE_ABOVE:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        idle = _FORGET_AFTER_FULL * self.burst / self.per_second
        self._buckets = {a: b for a, b in self._buckets.items() if now - b[1] < idle}

    def address_of(self, request: web.BaseRequest) -> str:
        """The client's address: the peer, or for a trusted proxy, whom it forwards for."""
        peer = _peer(request.remote or "unknown")
        if peer not in self.trusted_proxies:
            return peer
        # Every X-Forwarded-For line: a proxy may add its own line after the client's.
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
        for hop in reversed([_normal(hop.strip()) for hop in forwarded if hop.strip()]):
            if hop not in self.trusted_proxies:
                return hop
        return peer

    def is_loopback(self, request: web.BaseRequest) -> bool:
        """Whether the request comes from this machine: from a loopback address, and
        not through a proxy (unless a trusted one forwards for a loopback client)."""
        address = self.address_of(request)
        forwarded = any(header in request.headers for header in FORWARDING_HEADERS)
        if forwarded and address == _peer(request.remote or "unknown"):
            return False  # a proxy forwarded it and did not say for whom in a way we trust
        try:
            return ipaddress.ip_address(address).is_loopback
        except ValueError:
            return False

    def admit(self, request: web.BaseRequest) -> None:
        """Count the request against its client's bucket, or refuse it."""
        wait = self.wait_for_request(self.address_of(request))
        if wait:
            detail = f"more than {self.per_second:g} requests a second from this address"
            raise TooManyRequests(detail, wait)

    def may_connect(self, address: str) -> bool:
        return self.open_connections[address] < self.connections
