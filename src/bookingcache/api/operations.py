"""The operations endpoints of a process without the API (``bookingcache worker
--metrics-port``): ``/healthz``, ``/readyz`` and ``/metrics``, the same routes the API serves,
over the worker's container and its metrics registry. Anything else is a 404 problem."""

from __future__ import annotations

from fastapi import FastAPI

from bookingcache.api import health
from bookingcache.api.deps import Services
from bookingcache.api.problems import install_problem_handlers


def operations_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="bookingcache worker",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.state.metrics_registry = services.metrics
    install_problem_handlers(app)
    app.include_router(health.router)
    return app
