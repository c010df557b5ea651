"""The FastAPI app factory: mounts each capability's router."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from bastion import __version__
from bastion.auth.keys import KeyStore
from bastion.core.http import ERROR_RESPONSES, BodyLimitMiddleware, install_error_handlers, install_openapi
from bastion.core.settings import Settings, get_settings
from bastion.db.session import Database
from bastion.gateway.service import Gateway
from bastion.moderation.service import ModerationService

logger = logging.getLogger("bastion")


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    moderation: ModerationService | None = None,
) -> FastAPI:
    """A Bastion app for `settings`; the schema is migrated and the default model loaded at start-up.

    A `database` or `moderation` service passed in is shared, not owned: the app does not close it.
    """
    settings = settings or get_settings()
    db = database or Database(settings.resolved_database_url)
    service = moderation or ModerationService(settings)
    gateway = Gateway(settings, service, db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.upgrade()
        if settings.moderation.preload:
            app.state.moderation.model()
        if settings.llm.preload:
            gateway.models.backend(settings.llm.default_model)
        try:
            yield
        finally:
            gateway.close()
            if moderation is None:
                service.close()
            if database is None:
                db.dispose()

    app = FastAPI(
        title="Bastion",
        version=__version__,
        description="Self-hosted AI safety platform: OpenAI-compatible moderation and moderated chat.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.keys = KeyStore(db)
    app.state.moderation = service
    app.state.gateway = gateway
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.moderation.limits.max_body_bytes)

    from bastion.auth.api import router as keys_router
    from bastion.gateway.api import router as gateway_router
    from bastion.gateway.pages import router as chat_page_router
    from bastion.moderation.api import router as moderation_router
    from bastion.redteam.findings_api import router as findings_router
    from bastion.redteam.findings_pages import router as findings_pages_router
    from bastion.web.pages import STATIC
    from bastion.web.pages import router as pages_router

    app.include_router(moderation_router)
    app.include_router(gateway_router)
    app.include_router(keys_router)
    app.include_router(chat_page_router)
    app.include_router(pages_router)
    app.include_router(findings_router)
    app.include_router(findings_pages_router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    return app
