# splitter image; build context is the repository root (compose.yaml).
FROM python:3.11.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY splitter ./splitter
COPY legacy_backend ./legacy_backend
COPY new_backend ./new_backend
RUN pip install --no-cache-dir . && useradd --system --uid 10001 app && mkdir -p /data && chown app /data
USER app
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz')"]
EXPOSE 8080 8081
CMD ["splitter", "serve", "--config", "/etc/splitter/routes.yaml", "--host", "0.0.0.0", "--port", "8080", "--admin-host", "0.0.0.0", "--admin-port", "8081"]
