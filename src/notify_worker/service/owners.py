"""Owners: their API tokens, browser sessions and signing secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import Text, cast, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import signing
from ..models import api_tokens, signing_secrets, users
from .records import OWNER_CHANNEL, TOKEN_BYTES, User


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_user(conn: AsyncConnection, name: str) -> tuple[User, str]:
    """Create an owner and its first API token; the token is returned once."""
    user_id = await conn.scalar(insert(users).values(name=name).returning(users.c.id))
    assert user_id is not None
    token = await create_token(conn, user_id)
    return User(id=user_id, name=name), token


async def find_user(conn: AsyncConnection, name: str) -> User | None:
    row = (await conn.execute(select(users).where(users.c.name == name))).first()
    return None if row is None else User(id=row.id, name=row.name)


async def create_token(conn: AsyncConnection, user_id: int) -> str:
    token = "nw_" + secrets.token_urlsafe(TOKEN_BYTES)
    await conn.execute(
        insert(api_tokens).values(user_id=user_id, token_hash=hash_token(token))
    )
    return token


async def revoke_tokens(conn: AsyncConnection, user_id: int) -> int:
    result = await conn.execute(
        update(api_tokens)
        .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    await _credentials_changed(conn, user_id)
    return result.rowcount


async def _credentials_changed(conn: AsyncConnection, user_id: int) -> None:
    """Tell every process to end this owner's open streams, at commit.

    A stream checks its credentials once, when it opens; a revoke or a
    logout must not leave one running for the hours a retrying job lasts.
    Clients whose credentials still hold reconnect at once.
    """
    await conn.execute(
        select(
            func.pg_notify(
                OWNER_CHANNEL,
                cast(func.json_build_object("owner_id", user_id), Text),
            )
        )
    )


async def authenticate(conn: AsyncConnection, token: str) -> tuple[User, int] | None:
    """The owner of a live token and the token's id, or None."""
    digest = hash_token(token)
    row = (
        await conn.execute(
            select(api_tokens.c.id, api_tokens.c.token_hash, users.c.id, users.c.name)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.token_hash == digest, api_tokens.c.revoked_at.is_(None))
        )
    ).first()
    # The lookup is by an index on the hash; compare again in constant time
    # so a match never depends on how far two byte strings agree.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return User(id=row[2], name=row.name), row[0]


async def user_for_session(
    conn: AsyncConnection, token_id: int, generation: int
) -> User | None:
    """The owner of a browser session, unless its token was revoked or the
    session was ended by a logout."""
    row = (
        await conn.execute(
            select(users.c.id, users.c.name)
            .join(api_tokens, api_tokens.c.user_id == users.c.id)
            .where(
                api_tokens.c.id == token_id,
                api_tokens.c.revoked_at.is_(None),
                api_tokens.c.session_generation == generation,
            )
        )
    ).first()
    return None if row is None else User(id=row.id, name=row.name)


async def session_generation(conn: AsyncConnection, token_id: int) -> int:
    value = await conn.scalar(
        select(api_tokens.c.session_generation).where(api_tokens.c.id == token_id)
    )
    return int(value or 0)


async def end_sessions(conn: AsyncConnection, token_id: int) -> None:
    """Log out every browser session made with this token."""
    user_id = await conn.scalar(
        update(api_tokens)
        .where(api_tokens.c.id == token_id)
        .values(session_generation=api_tokens.c.session_generation + 1)
        .returning(api_tokens.c.user_id)
    )
    if user_id is not None:
        await _credentials_changed(conn, user_id)


# Signing secrets: each owner's current secret, and the one it replaced
# while that one is within its grace period.


class SecretExists(Exception):
    """The owner already has a signing secret; rotate it instead."""


async def create_signing_secret(
    conn: AsyncConnection, user_id: int, *, rotate: bool, grace_secs: int
) -> str:
    """A new signing secret for the owner, returned once.

    Rotating gives every secret still in use `grace_secs` more to live, so
    the old and the new secret sign side by side until it runs out.
    """
    current = signing_secrets.c.expires_at.is_(None)
    # Lock the owner so two rotations at once cannot leave two current secrets.
    await conn.execute(
        select(users.c.id).where(users.c.id == user_id).with_for_update()
    )
    live = await active_signing_secrets(conn, user_id)
    if live and not rotate:
        raise SecretExists(user_id)
    if rotate:
        await conn.execute(
            update(signing_secrets)
            .where(signing_secrets.c.user_id == user_id, current)
            .values(expires_at=func.now() + timedelta(seconds=grace_secs))
        )
    secret = signing.new_secret()
    await conn.execute(insert(signing_secrets).values(user_id=user_id, secret=secret))
    return secret


async def active_signing_secrets(conn: AsyncConnection, user_id: int) -> list[str]:
    """The secrets that sign this owner's deliveries now, newest first."""
    rows = await conn.scalars(
        select(signing_secrets.c.secret)
        .where(
            signing_secrets.c.user_id == user_id,
            or_(
                signing_secrets.c.expires_at.is_(None),
                signing_secrets.c.expires_at > func.now(),
            ),
        )
        .order_by(signing_secrets.c.created_at.desc(), signing_secrets.c.id.desc())
    )
    return list(rows)
