"""The authorisation matrix: which roles may call which route with which method, in one place.

`MATRIX[(METHOD, PATH)]` is the set of roles admitted, where PATH is the route's template exactly as the
router declares it (`/v1/conversations/{conversation_id}`); `PUBLIC` means no key is needed. Anything else
answers 401 without a valid key and 403 for a role outside the set. Resources that belong to someone
(conversations, `/v1/me/...`) are looked up as the caller's own: another user's reads as a 404, never a 403.

`tests/auth/test_matrix.py` walks every route of the app built by `create_app`, with no key and with a key
of every role, and expects exactly this table; a route missing here fails that test.

How to add a route (other capabilities too, e.g. red team's `/v1/redteam/...`):

1. Add one line per method below, in your capability's block: `("POST", "/v1/redteam/campaigns"): STAFF`.
   Use the role sets defined here (`ANY`, `ADMIN`, `STAFF`, ...) or write a `frozenset({Role.X, ...})`.
   `admin` is not implied: list it where it belongs (only safety reviewers read deleted conversations).
2. Guard the route with `caller: Annotated[Principal, Depends(authorize)]` (it reads this table), or with
   `require_roles(...)` from `bastion.auth.deps`; either way the test checks the route against the table.
3. Run `pytest tests/auth/test_matrix.py`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import iter_route_contexts
from starlette.concurrency import run_in_threadpool

from bastion.auth.deps import cached_principal, current_principal
from bastion.auth.keys import Principal, Role
from bastion.core.errors import PermissionDenied

Access = frozenset[Role] | None

PUBLIC: Access = None
ANY: frozenset[Role] = frozenset(Role)
ADMIN: frozenset[Role] = frozenset({Role.ADMIN})
REVIEWER: frozenset[Role] = frozenset({Role.SAFETY_REVIEWER})
STAFF: frozenset[Role] = frozenset({Role.ADMIN, Role.SAFETY_REVIEWER, Role.RED_TEAMER})

MATRIX: dict[tuple[str, str], Access] = {
    # -- service, docs and pages (pages hold no data: their scripts call the API with the user's key) --
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/chat"): PUBLIC,
    ("GET", "/privacy"): PUBLIC,
    ("GET", "/review"): PUBLIC,
    # -- moderation -------------------------------------------------------------------------------------
    ("POST", "/v1/moderations"): ANY,
    ("GET", "/v1/moderations/models"): ANY,
    ("GET", "/v1/moderations/models/{model_id}/card"): ANY,
    # -- gateway ----------------------------------------------------------------------------------------
    ("POST", "/v1/chat/completions"): ANY,
    ("GET", "/v1/models"): ANY,
    ("GET", "/v1/models/{model_id}"): ANY,
    # -- keys, organisations and users ------------------------------------------------------------------
    ("GET", "/v1/keys"): ADMIN,
    ("POST", "/v1/keys"): ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): ADMIN,
    ("PATCH", "/v1/keys/{key_id}"): ADMIN,
    ("GET", "/v1/organizations"): ADMIN,
    ("POST", "/v1/organizations"): ADMIN,
    ("PUT", "/v1/organizations/{org_id}/training-opt-out"): ADMIN,
    ("GET", "/v1/users"): ADMIN,
    ("POST", "/v1/users"): ADMIN,
    ("DELETE", "/v1/users/{user_id}"): ADMIN,
    # -- privacy: the caller's own data (another user's conversation is a 404) --------------------------
    ("GET", "/v1/conversations"): ANY,
    ("GET", "/v1/conversations/{conversation_id}"): ANY,
    ("DELETE", "/v1/conversations/{conversation_id}"): ANY,
    ("GET", "/v1/me"): ANY,
    ("DELETE", "/v1/me"): ANY,
    ("GET", "/v1/me/export"): ANY,
    ("GET", "/v1/me/training-opt-out"): ANY,
    ("PUT", "/v1/me/training-opt-out"): ANY,
    # -- privacy: safety review of deleted conversations (not admin: reviewers only, each read audited) -
    ("GET", "/v1/review/conversations"): REVIEWER,
    ("GET", "/v1/review/conversations/{conversation_id}"): REVIEWER,
    # -- red team: campaign runs (read-only; runs start from the CLI) -----------------------------------
    ("GET", "/v1/redteam/runs"): STAFF,
    ("GET", "/v1/redteam/runs/{run_id}"): STAFF,
    ("GET", "/v1/redteam/runs/{run_id}/attempts"): STAFF,
    ("GET", "/v1/redteam/runs/{run_id}/report"): STAFF,
    ("GET", "/v1/redteam/diff"): STAFF,
    # -- red team: findings (a red teamer sees its own; another's finding is a 404) ---------------------
    ("GET", "/redteam/findings"): PUBLIC,
    ("POST", "/v1/redteam/findings"): STAFF,
    ("GET", "/v1/redteam/findings"): STAFF,
    ("GET", "/v1/redteam/findings/{finding_id}"): STAFF,
    ("POST", "/v1/redteam/findings/{finding_id}/triage"): frozenset({Role.ADMIN, Role.SAFETY_REVIEWER}),
    ("GET", "/v1/redteam/findings/{finding_id}/comments"): STAFF,
    ("POST", "/v1/redteam/findings/{finding_id}/comments"): STAFF,
}


def access(method: str, path: str) -> Access:
    """The roles admitted to `method path` (PUBLIC is None); PermissionDenied for a route not listed."""
    method = "GET" if method == "HEAD" else method
    try:
        return MATRIX[(method, path)]
    except KeyError:
        raise PermissionDenied(
            f"{method} {path} is not in the authorisation matrix (bastion/auth/matrix.py); nobody may call it"
        ) from None


def app_routes(app: Any) -> list[tuple[str, str, Any]]:
    """Every (method, path template, endpoint) the app serves, with included routers flattened; mounts
    (static files) appear as ("MOUNT", path, None). HEAD is left out (it follows GET)."""
    found: list[tuple[str, str, Any]] = []
    for context in iter_route_contexts(app.routes):
        path = context.path_format or context.path or ""
        methods = context.methods
        if methods is None:
            found.append(("MOUNT", path, None))
            continue
        found += [(m, path, context.endpoint) for m in sorted(methods) if m != "HEAD"]
    return found


def _route_path(request: Request) -> str:
    """The template of the route that matched (prefixes of included routers applied)."""
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    paths: dict[tuple[Any, str], str] | None = getattr(request.app.state, "route_paths", None)
    if paths is None:
        paths = {(e, m): p for m, p, e in app_routes(request.app) if e is not None}
        request.app.state.route_paths = paths
    method = "GET" if request.method == "HEAD" else request.method
    return paths.get((endpoint, method), request.url.path)


async def authorize(request: Request) -> Principal:
    """A dependency: the caller, admitted by the matrix entry of the matched route (401/403 otherwise).

    Async, so that a key authenticated moments ago costs no hop to the thread pool; checking a key in
    the database runs there."""
    allowed = access(request.method, _route_path(request))
    principal = cached_principal(request)
    if principal is None:
        principal = await run_in_threadpool(current_principal, request)
    if allowed is not None and principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise PermissionDenied(
            f"this route needs one of the roles: {names}; your key is {principal.role.value}"
        )
    return principal


Caller = Annotated[Principal, Depends(authorize)]
