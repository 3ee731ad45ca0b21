"""The API token check that REST writes and the live feed share."""

from __future__ import annotations

import hmac


def token_matches(given: str | None, token: str) -> bool:
    """Whether `given` is the configured API token, compared in constant time.

    aiohttp decodes header bytes that are not UTF-8 as lone surrogates, and so does
    Python an environment variable's; surrogatepass encodes every string, those
    included, so a garbled token is refused (a 401), never a 500."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )
