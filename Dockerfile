# syntax=docker/dockerfile:1
# artifactd: multi-stage build, slim runtime, non-root user.
#   docker build -t artifactd .
#   docker run -p 50051:50051 -v artifacts:/data artifactd
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ARTIFACTD_HOST=0.0.0.0 \
    ARTIFACTD_PORT=50051 \
    ARTIFACTD_ARTIFACTS_DESTINATION=/data/artifacts \
    ARTIFACTD_BACKEND_STORE_URI=sqlite:////data/artifactd.db
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels artifactd \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /data --create-home artifactd
USER 10001
WORKDIR /data
EXPOSE 50051
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["artifactd", "health", "--server", "127.0.0.1:50051"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["artifactd"]
CMD ["serve"]
