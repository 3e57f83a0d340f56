"""Dependencies of the routes, declared once as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from capability_service.api.auth import key_problem
from capability_service.services import Services

# Every dependency is `async def`: FastAPI runs plain `def` dependencies in its thread pool, a thread
# round trip per request that waits for a free core while image work keeps both cores busy.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def require_api_key(
    services: ServicesDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> str:
    """The tenant of the request's key; 401 without a valid key."""
    # Also checked by `ApiKeyGate` before the body is read; kept here so every route declares its key.
    tenant = services.api_keys.tenant_of(x_api_key)
    if tenant is None:
        problem = key_problem(services.api_keys, x_api_key)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=problem, headers={"WWW-Authenticate": "ApiKey"})
    return tenant


ApiKeyDep = Depends(require_api_key)
# The tenant whose key made the request: every job it names must be that tenant's.
TenantDep = Annotated[str, Depends(require_api_key)]


async def user_id_header(
    x_user_id: Annotated[str | None, Header(alias="X-User-Id", max_length=128)] = None,
) -> str | None:
    return x_user_id or None


UserIdDep = Annotated[str | None, Depends(user_id_header)]


async def request_base_url(request: Request) -> str:
    """The address this request was made to (`scheme://host[:port][root path]`), for result URLs.

    Built from the `Host` header, and from the scheme and client uvicorn takes from the `X-Forwarded-*`
    headers of the proxies it trusts (`--forwarded-allow-ips`): the address the caller itself used.
    """
    return str(request.base_url).rstrip("/")


BaseUrlDep = Annotated[str, Depends(request_base_url)]
