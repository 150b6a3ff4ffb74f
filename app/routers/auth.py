"""Optional API-key check: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

import hmac
from typing import Annotated

from fastapi import Depends, Header

from app.errors import UnauthorizedError
from app.routers.deps import RuntimeDep


def _matches_any(candidate: str, keys: list[str]) -> bool:
    # Compare against every key, always, in constant time per key: neither the key nor
    # which key matched leaks through timing.
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


async def require_api_key(
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Passes when auth is off (no keys configured) or the request carries a valid key."""
    keys = runtime.api_keys
    if not keys:
        return
    candidate = x_api_key
    if candidate is None and authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            candidate = token.strip()
    if not candidate or not _matches_any(candidate, keys):
        runtime.metrics.record_error(UnauthorizedError.code)
        raise UnauthorizedError("missing or invalid API key; send Authorization: Bearer <key>")


ApiKeyRequired = Depends(require_api_key)
