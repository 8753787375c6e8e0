"""The HTTP API of the service (FastAPI): the app factory, its dependencies and routers."""
