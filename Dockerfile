# syntax=docker/dockerfile:1
# artifactd: multi-stage build, slim runtime, non-root user, hash-pinned dependencies.
#   docker build -t artifactd .
#   docker run -p 50051:50051 -p 9464:9464 -v artifactd-data:/data artifactd
# The image holds both distributions: artifactd (client/: CLI, protocol layer) and
# artifactd-server (server/) with the extras s3, gcs, azure, azure-identity, sftp, postgres and
# mysql: every destination but HDFS (which needs a JVM and libhdfs the image lacks) and every
# backend store. Dependencies come only from deploy/requirements.lock (regenerate with
# deploy/lock.sh, which resolves exactly those extras, after a change to client/ or
# server/pyproject.toml); every file is checked against its sha256 (--require-hashes) and only
# wheels are accepted, so nothing is compiled and the build needs no compiler.
# Lint: scripts/lint_deploy.sh (hadolint); tests/test_deploy.py runs the ENTRYPOINT/CMD below
# with these ENV values and the HEALTHCHECK command against it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Build tools (setuptools, wheel) pinned and hashed too: the project wheel is built without pip's
# isolated build environment, which would fetch unpinned ones.
COPY deploy/build-requirements.lock deploy/requirements.lock /locks/
RUN python -m pip install --no-cache-dir --require-hashes --only-binary=:all: \
      -r /locks/build-requirements.lock \
 && python -m venv --without-pip /opt/artifactd \
 && python -m pip --python /opt/artifactd/bin/python install --no-cache-dir \
      --require-hashes --only-binary=:all: --no-deps -r /locks/requirements.lock
COPY client/pyproject.toml client/README.md ./client/
COPY client/artifactd ./client/artifactd
COPY server/pyproject.toml server/README.md ./server/
COPY server/artifactd_server ./server/artifactd_server
# The two distributions: built here, installed without dependencies (all of them are in the lock).
RUN python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels \
      ./client ./server \
 && python -m pip --python /opt/artifactd/bin/python install --no-cache-dir --no-deps \
      --no-index /wheels/artifactd-*.whl /wheels/artifactd_server-*.whl \
 && python -m pip --python /opt/artifactd/bin/python check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="artifactd" \
      org.opencontainers.image.description="gRPC artifact server for machine-learning runs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 artifactd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --create-home \
      --shell /usr/sbin/nologin artifactd
COPY --from=build /opt/artifactd /opt/artifactd
# Listen on every interface (the container's network namespace is the boundary); artifacts and
# the SQLite backend store on the /data volume. Point ARTIFACTD_BACKEND_STORE_URI at PostgreSQL
# or MySQL for more than one replica.
ENV PATH=/opt/artifactd/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    ARTIFACTD_HOST=0.0.0.0 \
    ARTIFACTD_PORT=50051 \
    ARTIFACTD_METRICS_PORT=9464 \
    ARTIFACTD_ARTIFACTS_DESTINATION=/data/artifacts \
    ARTIFACTD_BACKEND_STORE_URI=sqlite:////data/artifactd.db \
    ARTIFACTD_GRACE_PERIOD=30
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 50051: gRPC (artifacts, runs, grpc.health.v1, reflection); 9464: Prometheus /metrics (HTTP).
EXPOSE 50051 9464
# grpc.health.v1 Check on the whole server ("") through loopback; exits 1 unless SERVING, so
# the container turns unhealthy while it drains after SIGTERM. Through sh to follow
# ARTIFACTD_PORT when it is overridden.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["sh", "-c", "exec artifactd health --server \"127.0.0.1:${ARTIFACTD_PORT}\" --timeout 3"]
# The server handles SIGTERM itself (NOT_SERVING, then ARTIFACTD_GRACE_PERIOD seconds for
# in-flight transfers, exit 0); give `docker stop` a --time longer than that grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["artifactd"]
CMD ["serve"]
