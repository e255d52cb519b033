FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY gateway ./gateway
COPY plugins ./plugins
# The locked, hash-checked dependency tree first; then the gateway itself, resolving nothing more.
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.lock && pip install --no-cache-dir --no-deps . && useradd --system --home /app gateway && mkdir -p /app/data && chown gateway /app/data
COPY gateway.yaml ./
USER gateway

# Listen on all interfaces inside the container; data under /app/data (mount a volume there).
ENV MNX_GATEWAY_CONFIG=/app/gateway.yaml
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/health')"
CMD ["mnx-gateway", "serve", "--host", "0.0.0.0"]
