"""Signed deliveries, as the Standard Webhooks specification defines them.

An owner with a signing secret (`whsec_` + base64 of random bytes) gets
three headers on every delivery: `webhook-id` (the job id, the same on
every attempt so targets can de-duplicate), `webhook-timestamp` (Unix
seconds) and `webhook-signature`, `v1,<base64 HMAC-SHA256>` over
`id.timestamp.body` with the exact bytes sent. While a rotated secret is
still within its grace period, the old and the new secret both sign, as
space-separated signatures, so a target can switch at its own pace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROTATION_GRACE_SECS = 24 * 3600


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    message_id: str,
    body: bytes,
    secrets_in_use: Sequence[str],
    *,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The delivery headers; without a secret, only `webhook-id`."""
    result = {"webhook-id": message_id}
    if not secrets_in_use:
        return result
    moment = int(time.time()) if timestamp is None else timestamp
    result["webhook-timestamp"] = str(moment)
    result["webhook-signature"] = " ".join(
        signature(secret, message_id, moment, body) for secret in secrets_in_use
    )
    return result
