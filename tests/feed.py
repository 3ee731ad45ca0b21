"""Reading the live feed in tests: a real WebSocket client's messages, with deadlines."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType


async def receive_json(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> Any:
    message = await asyncio.wait_for(ws.receive(), within)
    assert message.type == WSMsgType.TEXT, message
    return json.loads(message.data)


async def collect_until(
    ws: aiohttp.ClientWebSocketResponse,
    done: Callable[[list[dict[str, Any]]], bool],
    within: float = 10.0,
) -> list[dict[str, Any]]:
    """Messages until `done` holds for those seen so far; fails after `within` seconds."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while not done(seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; got {[m['type'] for m in seen]}"
        seen.append(await receive_json(ws, remaining))
    return seen
