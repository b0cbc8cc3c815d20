FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY services ./services
RUN pip install --no-cache-dir . \
    && mkdir -p /data/collector-spool /data/crm_ingest \
    && chown -R nobody /data
USER nobody
