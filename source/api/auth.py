"""Who is calling: `Authorization: Bearer hk_<id>.<secret>` -> the key's project (or every project for
an admin key, or for --no-auth on loopback). A task of another project is reported as not found."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from source.store.api_store import ApiKey

NO_AUTH = ApiKey(id="no-auth", project_id=None, admin=True)
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
COOKIE = "headless_key"  # the dashboard's sign-in (HttpOnly, SameSite=Strict)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def optional_caller(request: Request) -> ApiKey | None:
    """The key of a Bearer header, else of the dashboard cookie; None when neither is valid."""
    state = request.app.state
    if state.no_auth:
        return NO_AUTH
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return state.api.authenticate(token.strip())
    cookie = request.cookies.get(COOKIE)
    if cookie is None:
        return None
    # A cookie rides along on requests other sites start: changes need a header only our script sends.
    if request.method not in SAFE_METHODS and request.headers.get("x-requested-with") != "dashboard":
        return None
    return state.api.authenticate(cookie)


def caller(request: Request) -> ApiKey:
    key = optional_caller(request)
    if key is None:
        raise HTTPException(401, "a valid API key is required (Authorization: Bearer hk_...)",
                            headers={"WWW-Authenticate": "Bearer"})
    return key


def sees(key: ApiKey, row: dict[str, Any] | None) -> bool:
    return row is not None and (key.admin or key.project_id is None or row.get("project_id") == key.project_id)


Caller = Annotated[ApiKey, Depends(caller)]  # an endpoint's `key: Caller` parameter
