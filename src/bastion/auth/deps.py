"""FastAPI dependencies: the caller from `Authorization: Bearer`, and role checks."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from bastion.auth.keys import KeyStore, Principal, Role
from bastion.core.errors import AuthenticationError, PermissionDenied

ANONYMOUS_ADMIN = Principal("auth-off", Role.ADMIN)


def cached_principal(request: Request) -> Principal | None:
    """The caller when known without the database (auth off, or a key authenticated moments ago; see
    `KeyStore`'s cache), else None: `current_principal` then checks the key."""
    if request.app.state.settings.auth == "off":
        return ANONYMOUS_ADMIN
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    store: KeyStore = request.app.state.keys
    return store.cached_principal(token.strip())


def current_principal(request: Request) -> Principal:
    """The caller; with auth off every caller is an admin (allowed on loopback only)."""
    settings = request.app.state.settings
    if settings.auth == "off":
        return ANONYMOUS_ADMIN
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    store: KeyStore = request.app.state.keys
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.", code=None
            )
        return store.authenticate(token.strip())
    except AuthenticationError as exc:
        failures = getattr(request.app.state, "auth_failures", None)
        if failures is not None:
            address = request.client.host if request.client else "unknown"
            failures.record(address, exc.code or "missing_api_key", request.url.path)
        raise


def require_roles(*roles: Role) -> Callable[[Request], Principal]:
    """A dependency that admits the given roles (and admin) and refuses the rest with 403."""
    allowed = {Role.ADMIN, *roles}

    def dependency(request: Request) -> Principal:
        principal = current_principal(request)
        if principal.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise PermissionDenied(
                f"this route needs one of the roles: {names}; your key is {principal.role.value}"
            )
        return principal

    return dependency


ANY_ROLE = tuple(Role)
