"""Signed, expiring access tokens for the bridge.

Pure stdlib, no I/O, so the bot can mint tokens without importing anything else of
the bridge. A token is ``base64url(payload_json) + "." + base64url(hmac_sha256)``
where the payload is ``{"space", "user", "role", "exp", "v"}``.

``user`` may be ``None`` for anonymous listeners (the bridge never mints those;
anonymous access needs no token at all).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from .roles import ROLES

TOKEN_VERSION = 1
VALID_ROLES = ROLES


class TokenError(ValueError):
    """A token was refused. ``reason`` is one of the ``REASON_*`` constants."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


REASON_MALFORMED = "malformed"
REASON_BAD_SIGNATURE = "bad signature"
REASON_EXPIRED = "expired"
REASON_WRONG_SPACE = "wrong space"


@dataclass(frozen=True)
class TokenClaims:
    space: str
    user: str | None
    role: str
    exp: int
    v: int = TOKEN_VERSION


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not text or any(c not in _B64_ALPHABET for c in text):
        raise TokenError(REASON_MALFORMED, "not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError(REASON_MALFORMED, "not base64url") from exc


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("token secret must not be empty")
    return key


def _sign(secret: str | bytes, body: str) -> bytes:
    return hmac.new(_key(secret), b"chorus-token." + body.encode("ascii"), hashlib.sha256).digest()


def mint(
    secret: str | bytes,
    space: str,
    user: str | None,
    role: str,
    ttl_seconds: int,
    *,
    now: float | None = None,
) -> str:
    """Return a token for ``user`` in ``space`` with ``role``, valid ``ttl_seconds``."""
    if role not in VALID_ROLES:
        raise ValueError(f"unknown role {role!r}")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued = time.time() if now is None else now
    payload = {
        "space": space,
        "user": user,
        "role": role,
        "exp": int(issued) + int(ttl_seconds),
        "v": TOKEN_VERSION,
    }
    body = _b64e(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{body}.{_b64e(_sign(secret, body))}"


def verify(
    secret: str | bytes, token: str, space: str | None = None, *, now: float | None = None
) -> TokenClaims:
    """Check ``token`` and return its claims, or raise :class:`TokenError`.

    Order of checks: shape, signature (constant-time), payload, expiry, space.
    """
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
        raise TokenError(REASON_MALFORMED, "expected two dot-separated parts")
    body, sig_text = token.split(".")
    sig = _b64d(sig_text)
    _b64d(body)
    if not hmac.compare_digest(sig, _sign(secret, body)):
        raise TokenError(REASON_BAD_SIGNATURE)
    try:
        payload = json.loads(_b64d(body))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenError(REASON_MALFORMED, "payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise TokenError(REASON_MALFORMED, "payload is not an object")
    if payload.get("v") != TOKEN_VERSION:
        raise TokenError(REASON_MALFORMED, f"unsupported version {payload.get('v')!r}")
    claims_space, user, role, exp = (payload.get(k) for k in ("space", "user", "role", "exp"))
    if not isinstance(claims_space, str) or not claims_space:
        raise TokenError(REASON_MALFORMED, "space missing")
    if user is not None and not isinstance(user, str):
        raise TokenError(REASON_MALFORMED, "user is not a string")
    if role not in VALID_ROLES:
        raise TokenError(REASON_MALFORMED, f"unknown role {role!r}")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise TokenError(REASON_MALFORMED, "exp is not an integer")
    current = time.time() if now is None else now
    if current >= exp:
        raise TokenError(REASON_EXPIRED, f"expired {int(current - exp)} s ago")
    if space is not None and claims_space != space:
        raise TokenError(REASON_WRONG_SPACE, f"token is for another space than {space}")
    return TokenClaims(claims_space, user, role, exp)
