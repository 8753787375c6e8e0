# syntax=docker/dockerfile:1
# The connector's image, for a customer who runs it as a container rather than as an Azure
# Function. Build it from the connector's directory:
#
#     docker build -f deploy/connector.Dockerfile -t bookingcache-connector connector
#
# Its entry point is the `bookingcache-connector` command, `serve` by default; every setting is
# an environment variable (connector/README.md, "Settings"). tests/deploy/test_images.py runs
# the install and start commands below, as written, from wheels in a fresh virtualenv.

ARG PYTHON=python:3.12-slim-bookworm

# --- build: wheels of the connector (with its HTTP server) and its dependencies ----------------
FROM ${PYTHON} AS build
ARG WHEELS=/wheels
ARG VENV=/opt/bookingcache-connector
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --wheel-dir "${WHEELS}" ".[server]"
RUN python -m venv "${VENV}" \
    && "${VENV}/bin/pip" install --no-cache-dir --no-index --find-links "${WHEELS}" \
        "bookingcache-connector[server]"

# --- run: the virtualenv alone, as a user without privileges ------------------------------------
FROM ${PYTHON}
ARG VENV=/opt/bookingcache-connector
RUN groupadd --system --gid 10002 connector \
    && useradd --system --uid 10002 --gid connector --no-create-home \
        --home-dir /var/lib/bookingcache-connector --shell /usr/sbin/nologin connector \
    && install -d -m 0700 -o connector -g connector /var/lib/bookingcache-connector
COPY --from=build ${VENV} ${VENV}
ENV PATH="${VENV}/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONNECTOR_HOST=0.0.0.0 \
    CONNECTOR_PORT=8080 \
    CONNECTOR_STATE_DIR=/var/lib/bookingcache-connector
USER connector:connector
WORKDIR /var/lib/bookingcache-connector
# The relay's inbox and the subscription map: keep them across restarts.
VOLUME ["/var/lib/bookingcache-connector"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bookingcache-connector", "healthcheck"]
ENTRYPOINT ["bookingcache-connector"]
CMD ["serve"]
