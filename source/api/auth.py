"""Who is calling: `Authorization: Bearer hk_<id>.<secret>` -> the key's project (or every project for
an admin key, or for --no-auth on loopback). A task of another project is reported as not found."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from source.store.api_store import ApiKey

NO_AUTH = ApiKey(id="no-auth", project_id=None, admin=True)
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def caller(request: Request) -> ApiKey:
    state = request.app.state
    if state.no_auth:
        return NO_AUTH
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    key = state.api.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        raise HTTPException(401, "a valid API key is required (Authorization: Bearer hk_...)",
                            headers={"WWW-Authenticate": "Bearer"})
    return key


def sees(key: ApiKey, row: dict[str, Any] | None) -> bool:
    return row is not None and (key.admin or key.project_id is None or row.get("project_id") == key.project_id)


Caller = Annotated[ApiKey, Depends(caller)]  # an endpoint's `key: Caller` parameter
