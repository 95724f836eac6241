"""Signed tenant claims: the dispatcher vouches whose call this room is, for a short time.

A claim is a compact HS256 token (PyJWT) in the job metadata under `tenant_sig`. It
binds the tenant, the room name and/or the job id, an expiry, and the key id (`kid`
header) of the key it was made with, so a claim seen once cannot be reused for another
room, another job, or after it expires. Keys are `kid:secret` lines (the first signs,
all verify), so they rotate without refusing calls in flight.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import jwt

from ..admission import RejectReason
from ..errors import ConfigError
from ..keys import KeyRing

SIGNATURE_KEY = "tenant_sig"
"""Job metadata key of the tenant claim (a compact HS256 token)."""

MIN_KEY_BYTES = 32
"""Shortest tenant claim key accepted: HS256 keys shorter than its hash are guessable."""

MAX_CLAIM_CHARS = 2048
"""Longest claim read; anything longer is refused before it is decoded."""

LEEWAY_S = 5.0
"""Clock skew allowed between the dispatcher and the worker when checking expiry."""

_ALGORITHM = "HS256"
_STATIC_SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")

Verdict = tuple[RejectReason, str] | None
"""None to let the call through, or the reason and a one-line detail to refuse it."""


def claim_keys(secret: str | bytes | Mapping[str, str | bytes] | KeyRing) -> KeyRing:
    """A key ring for tenant claims; every key must be at least `MIN_KEY_BYTES` long."""
    try:
        keys = secret if isinstance(secret, KeyRing) else KeyRing(secret)
    except ValueError as e:
        raise ConfigError(f"tenant secret: {e}") from None
    for key_id, key in zip(keys.kids, keys.secrets(), strict=True):
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"tenant secret {key_id!r} is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                "random bytes (e.g. `openssl rand -hex 32`)"
            )
    return keys


def sign_tenant(
    tenant: str,
    secret: str | bytes | Mapping[str, str | bytes] | KeyRing,
    *,
    room: str | None = None,
    job_id: str | None = None,
    ttl: float = 300.0,
    now: float | None = None,
) -> str:
    """The claim a dispatcher puts next to `tenant` in the job metadata (`tenant_sig`).

    Bound to `room` and/or `job_id` (at least one) and valid for `ttl` seconds; signed
    with the first key of `secret`, whose id goes in the token's `kid` header.
    """
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be a non-empty string")
    if not room and not job_id:
        raise ValueError("a tenant claim must name the room and/or the job it is for")
    if not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    keys = claim_keys(secret)
    kid, key = keys.signing
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {
        "tenant": tenant,
        "iat": int(issued),
        "exp": int(issued + ttl),
    }
    if room:
        payload["room"] = room
    if job_id:
        payload["job"] = job_id
    return jwt.encode(payload, key, algorithm=_ALGORITHM, headers={"kid": kid})


class ClaimVerifier:
    """Refuses a call whose tenant claim is missing, forged, expired or for another call."""

    def __init__(
        self,
        secret: str | bytes | Mapping[str, str | bytes] | KeyRing,
        *,
        leeway_s: float = LEEWAY_S,
        clock: Any = time.time,
    ) -> None:
        self._keys = claim_keys(secret)
        self._leeway = leeway_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"ClaimVerifier(kids={list(self._keys.kids)!r}, secret=<hidden>)"

    def check(self, metadata: Mapping[str, Any], tenant: str, *, room: str, job_id: str) -> Verdict:
        """Offer time: is the claim in `metadata` valid for `tenant` in `room` / `job_id`?"""
        token = metadata.get(SIGNATURE_KEY)
        if not isinstance(token, str) or not token.strip():
            return (
                RejectReason.TENANT_UNSIGNED,
                f"the tenant is claimed without {SIGNATURE_KEY!r} in the job metadata",
            )
        token = token.strip()
        if len(token) > MAX_CLAIM_CHARS or not token.isascii():
            return RejectReason.TENANT_FORGED, "the tenant claim is not a compact token"
        if _STATIC_SIGNATURE.match(token):
            return (
                RejectReason.TENANT_FORGED,
                "the tenant claim is an old static signature, no longer accepted; sign a "
                "room-bound claim (openrtc tenant sign)",
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return RejectReason.TENANT_FORGED, "the tenant claim is not a compact token"
        key = self._keys.get(header.get("kid"))
        if key is None or header.get("alg") != _ALGORITHM:
            return RejectReason.TENANT_FORGED, "the tenant claim names an unknown key id"
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                leeway=self._leeway,
                options={"require": ["exp", "tenant"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            return RejectReason.TENANT_CLAIM_EXPIRED, "the tenant claim has expired"
        except jwt.InvalidTokenError:
            return RejectReason.TENANT_FORGED, "the tenant claim's signature is not valid"
        return _binding(claims, tenant, room, job_id)


def _binding(claims: Mapping[str, Any], tenant: str, room: str, job_id: str) -> Verdict:
    """A validly signed claim still has to be for this tenant and this call."""
    if claims.get("tenant") != tenant:
        return RejectReason.TENANT_FORGED, "the tenant claim is for another tenant"
    bound_room, bound_job = claims.get("room"), claims.get("job")
    if bound_room is None and bound_job is None:
        return RejectReason.TENANT_FORGED, "the tenant claim names neither a room nor a job"
    if bound_room is not None and bound_room != room:
        return RejectReason.TENANT_CLAIM_MISMATCH, "the tenant claim is for another room"
    if bound_job is not None and bound_job != job_id:
        return RejectReason.TENANT_CLAIM_MISMATCH, "the tenant claim is for another job"
    return None


def verify_tenant(
    token: str,
    secret: str | bytes | Mapping[str, str | bytes] | KeyRing,
    *,
    tenant: str,
    room: str = "",
    job_id: str = "",
) -> bool:
    """True when `token` is a valid, unexpired claim for `tenant` in `room` / `job_id`."""
    verdict = ClaimVerifier(secret).check({SIGNATURE_KEY: token}, tenant, room=room, job_id=job_id)
    return verdict is None
