"""The FastAPI app factory: mounts each capability's router."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from bastion import __version__
from bastion.auth.failures import AuthFailureAudit
from bastion.auth.keys import KeyStore
from bastion.core.http import ERROR_RESPONSES, BodyLimitMiddleware, install_error_handlers, install_openapi
from bastion.core.settings import Settings, get_settings
from bastion.db.session import Database
from bastion.db.tables import utcnow
from bastion.gateway.service import Gateway
from bastion.moderation.service import ModerationService
from bastion.privacy.service import Privacy

logger = logging.getLogger("bastion")


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    moderation: ModerationService | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """A Bastion app for `settings`; the schema is migrated and the default model loaded at start-up.

    A `database` or `moderation` service passed in is shared, not owned: the app does not close it.
    `clock` is the privacy capability's time (retention, audit), injectable for tests.
    """
    settings = settings or get_settings()
    db = database or Database(settings.resolved_database_url)
    service = moderation or ModerationService(settings)
    gateway = Gateway(settings, service, db)
    privacy = Privacy.build(settings, db, clock=clock, usage_flush=gateway.usage.flush)
    if settings.privacy.store_conversations:
        gateway.sink = privacy.sink

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.upgrade()
        privacy.record_policies()
        if settings.moderation.preload:
            app.state.moderation.model()
        if settings.llm.preload:
            gateway.models.backend(settings.llm.default_model)
        purger = _scheduled_purge(privacy, settings.privacy.purge_interval_s)
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
                with suppress(asyncio.CancelledError):
                    await purger
            gateway.close()
            privacy.close()
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
    app.state.keys = KeyStore(db, privacy.audit)
    app.state.privacy = privacy
    app.state.audit = privacy.audit
    app.state.auth_failures = AuthFailureAudit(privacy.audit)
    app.state.moderation = service
    app.state.gateway = gateway
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.moderation.limits.max_body_bytes)

    from bastion.auth.api import router as keys_router
    from bastion.gateway.api import router as gateway_router
    from bastion.gateway.pages import router as chat_page_router
    from bastion.moderation.api import router as moderation_router
    from bastion.privacy.api import router as privacy_router
    from bastion.privacy.pages import router as privacy_pages_router
    from bastion.redteam.api import router as redteam_runs_router
    from bastion.redteam.findings_api import router as findings_router
    from bastion.redteam.findings_pages import router as findings_pages_router
    from bastion.web.pages import STATIC
    from bastion.web.pages import router as pages_router

    app.include_router(moderation_router)
    app.include_router(gateway_router)
    app.include_router(keys_router)
    app.include_router(privacy_router)
    app.include_router(privacy_pages_router)
    app.include_router(chat_page_router)
    app.include_router(pages_router)
    app.include_router(redteam_runs_router)
    app.include_router(findings_router)
    app.include_router(findings_pages_router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    return app


def _scheduled_purge(privacy: Privacy, interval_s: float) -> asyncio.Task[None] | None:
    """The retention purge every `interval_s` seconds in the background (None when 0)."""
    if interval_s <= 0:
        return None

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                report = await asyncio.to_thread(privacy.purge)
                if report.conversations:
                    logger.info("scheduled purge removed %d conversations", report.conversations)
            except Exception:
                logger.exception("scheduled purge failed")

    return asyncio.get_running_loop().create_task(loop(), name="bastion-purge")
