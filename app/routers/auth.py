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


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries in `X-API-Key` or `Authorization: Bearer`, if any."""
    if x_api_key:
        return x_api_key
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def key_accepted(keys: list[str], candidate: str | None) -> bool:
    """True when auth is off (no keys) or `candidate` is one of `keys`."""
    if not keys:
        return True
    return bool(candidate) and _matches_any(candidate or "", keys)


async def require_api_key(
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Passes when auth is off (no keys configured) or the request carries a valid key."""
    if not key_accepted(runtime.api_keys, presented_key(authorization, x_api_key)):
        runtime.metrics.record_error(UnauthorizedError.code)
        raise UnauthorizedError("missing or invalid API key; send Authorization: Bearer <key>")


ApiKeyRequired = Depends(require_api_key)
