"""Token checks and token minting, done exactly as a LiveKit server does them.

Workers and control clients prove they hold the API secret with an HS256 JWT; jobs
get a real room-join token so the worker's token handling runs unchanged.
"""

from __future__ import annotations

import datetime

from livekit import api

CONTROL_IDENTITY = "openrtc-devserver-client"


def check_bearer(header: str | None, verifier: api.TokenVerifier) -> api.access_token.Claims:
    """Return the claims of a valid `Bearer <JWT>` header; raise PermissionError otherwise."""
    if not header or not header.startswith("Bearer "):
        raise PermissionError("the request has no 'Authorization: Bearer <token>' header")
    try:
        return verifier.verify(header.removeprefix("Bearer ").strip())
    except Exception as exc:
        raise PermissionError(
            f"the token is not valid for this server's API key and secret ({type(exc).__name__})"
        ) from None


def check_worker_bearer(header: str | None, verifier: api.TokenVerifier) -> None:
    """A worker's token must be valid and carry the `agent` video grant."""
    claims = check_bearer(header, verifier)
    if claims.video is None or not claims.video.agent:
        raise PermissionError("the worker token lacks the 'agent' video grant")


def room_token(
    api_key: str,
    api_secret: str,
    *,
    room: str,
    identity: str,
    name: str = "",
    metadata: str = "",
    attributes: dict[str, str] | None = None,
) -> str:
    """The room-join token a LiveKit server hands to the worker with a job assignment."""
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
    )
    if name:
        token = token.with_name(name)
    if metadata:
        token = token.with_metadata(metadata)
    if attributes:
        token = token.with_attributes(dict(attributes))
    return token.to_jwt()


def control_token(api_key: str, api_secret: str, ttl: float = 600.0) -> str:
    """A short-lived token for the control API (any valid token for the key is accepted)."""
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(CONTROL_IDENTITY)
        .with_ttl(datetime.timedelta(seconds=ttl))
        .to_jwt()
    )
