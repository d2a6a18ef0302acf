"""Mission passwords on the HTTP side: read the ``password`` parameter, hash it and check it
with scrypt (``identity.users``, RFC 7914) in a worker thread so a slow KDF never stalls the
event loop (tak-missions.md 5.1, 5.3: password-protected missions)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from liaison.identity.users import hash_password, verify_password_hash
from liaison.model.principal import Principal
from liaison.query import MissionError, Missions

# Characters in a mission password (TAK sets no rule; bounds the KDF's input).
MAX_PASSWORD_CHARS = 256


def password_param(request: web.Request) -> str | None:
    """The ``password`` query parameter as sent (not trimmed); None when absent or empty."""
    value = request.query.get("password")
    if value is None or value == "":
        return None
    if len(value) > MAX_PASSWORD_CHARS or any(ord(c) < 0x20 for c in value):
        raise MissionError(400, "password is not acceptable")
    return value


async def hashed(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def password_ok(
    missions: Missions, viewer: Principal, name: str, password: str | None
) -> bool | None:
    """None when no password was given; otherwise whether it is the mission's (False for a
    mission without one)."""
    if password is None:
        return None
    stored = missions.password_hash_of(viewer, name)
    if not stored:
        return False
    return await asyncio.to_thread(verify_password_hash, password, stored)
