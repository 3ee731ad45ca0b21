"""The one API-token comparison that REST writes and the live feed use."""

from __future__ import annotations

import pytest

from cryptomon.http.authorization import token_matches


def test_the_configured_token_matches_and_nothing_else_does() -> None:
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("s3cre", "s3cret")
    assert not token_matches("", "s3cret")
    assert not token_matches(None, "s3cret")


@pytest.mark.parametrize("given", ["\udcff\udcfe", "\ud800", "tok\udcff"])
def test_a_garbled_token_is_refused_not_raised(given: str) -> None:
    # aiohttp turns header bytes that are not UTF-8 into lone surrogates.
    assert not token_matches(given, "s3cret")
    assert token_matches(given, given)  # an environment variable decodes the same way
