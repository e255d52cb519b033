# The base image, pinned by tag AND digest so a rebuild gets the same bytes. The digest is the
# multi-platform manifest of python:3.11.13-slim-bookworm as pinned in several public
# Dockerfiles (found through the tool library; no registry was reachable when it was written).
# To move to a newer patch release: docker buildx imagetools inspect python:3.11.x-slim-bookworm
FROM python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Layer 1, the locked, hash-checked dependency tree, before any of our code: editing the gateway
# reuses this layer instead of reinstalling LiteLLM and everything else.
COPY requirements/runtime.lock ./requirements/runtime.lock
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.lock

# Layer 2, the gateway itself, resolving nothing more.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY plugins ./plugins
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --home /app gateway \
    && mkdir -p /app/data && chown gateway /app/data
COPY gateway.yaml ./
COPY config ./config

USER gateway
# Data under /app/data (gateway.yaml's ./data): a volume, so it outlives the container.
# Declared after the chown above, which a volume would otherwise discard.
VOLUME /app/data

# config/docker.yaml: listens on every interface of the container, data under /app/data, and the
# project key from MNX_API_KEY, which has no default there (docker run -e MNX_API_KEY=...): a
# reachable gateway must not accept the public development key of gateway.yaml.
ENV MNX_GATEWAY_CONFIG=/app/config/docker.yaml
EXPOSE 8787
# --start-period: the first start opens the database and the vector index; failed checks in
# that window do not count against the container.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/health', timeout=2)"
CMD ["mnx-gateway", "serve"]
