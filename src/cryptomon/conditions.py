"""PLACEHOLDER until the condition language lands (being written in parallel): parses
nothing, so importing cryptomon.config keeps working meanwhile. Overwrite freely."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


class ConditionError(ValueError):
    pass


class Answer:
    def __init__(
        self,
        *,
        status: int | None,
        response_time_ms: float,
        headers: Mapping[str, str],
        body: bytes,
        certificate_expires_in_ms: float | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.body = body

    @property
    def json(self) -> Any:
        return None

    def redact(self, text: str) -> str:
        return text


class Verdict(NamedTuple):
    held: bool
    seen: str


class Condition:
    def __init__(self, text: str) -> None:
        self.text = text
        self.uses_status = "[STATUS]" in text

    def check(self, answer: Answer) -> Verdict:
        return Verdict(True, "")


class Observation:
    def __init__(self, text: str) -> None:
        self.text = text

    def extract(self, answer: Answer) -> int | float | str | bool | None:
        return None


def parse_condition(text: str) -> Condition:
    return Condition(text)


def parse_observation(text: str) -> Observation:
    return Observation(text)
