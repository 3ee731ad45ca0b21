"""The hash chain that makes the log tamper-evident.

Each event's hash covers the previous event's hash and every stored field of
this event, so editing, deleting or reordering any row breaks the chain at
that row.
"""

from __future__ import annotations

import hashlib

import msgspec

GENESIS_HASH = "0" * 64

_encoder = msgspec.json.Encoder()


def chain_hash(
    previous_hash: str,
    event_id: str,
    stream: str,
    version: int,
    event_type: str,
    schema_version: int,
    recorded_at: float,
    correlation_id: str | None,
    causation_id: str | None,
    actor: str | None,
    payload: bytes,
) -> str:
    header = _encoder.encode(
        (
            event_id,
            stream,
            version,
            event_type,
            schema_version,
            recorded_at,
            correlation_id,
            causation_id,
            actor,
        )
    )
    digest = hashlib.sha256(previous_hash.encode())
    digest.update(b"\n")
    digest.update(header)
    digest.update(b"\n")
    digest.update(payload)
    return digest.hexdigest()
