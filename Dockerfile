# recsrv: the production image. Configuration comes from RECSRV_<SECTION>__<KEY>
# environment variables (see config.toml); docker-compose.yml wires it to RabbitMQ
# and MongoDB. Build with `docker build -t recsrv .`.

# ---- build: recsrv and its runtime dependencies into a virtualenv ----------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/recsrv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY recsrv ./recsrv
# Runtime dependencies only: no [dev] or [plot] extras, not an editable install.
RUN /opt/recsrv/bin/pip install .

# ---- runtime: the virtualenv, a non-root user, nothing else ----------------------
FROM python:3.11-slim

# Listen on every interface: 127.0.0.1 (the default) is unreachable from outside.
ENV PATH=/opt/recsrv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECSRV_SERVER__HOST=0.0.0.0 \
    RECSRV_SERVER__PORT=8080

RUN groupadd --system --gid 10001 recsrv \
    && useradd --system --uid 10001 --gid recsrv --home-dir /app --shell /usr/sbin/nologin recsrv \
    && mkdir -p /app/data \
    && chown -R recsrv:recsrv /app

COPY --from=build /opt/recsrv /opt/recsrv

# The embedded checkpoint store (file://./data) lives in /app/data: mount a volume
# there, or set RECSRV_STORE__URL=mongodb://… as docker-compose.yml does.
WORKDIR /app
USER 10001:10001

EXPOSE 8080

# Liveness only (/readyz also waits for the restore and the consumer to catch up).
# The slim image has no curl: Python's urllib does the request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RECSRV_SERVER__PORT', '8080') + '/healthz', timeout=4)"]

# recsrv is PID 1 and handles SIGTERM itself: stop consuming, finish requests, write
# a final checkpoint, exit 0. Give it more than server.shutdown_timeout_s (10 s) plus
# the checkpoint: `docker stop -t 30`, or stop_grace_period in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["recsrv"]
CMD ["run"]
