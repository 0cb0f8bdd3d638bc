# rowstream's image: the worker by default (`faust -A app worker`), the ingest tier with
# `faust -A app ingest` as the command (deploy/kubernetes/ingest-deployment.yaml). Built the way `make install` installs the project: a virtual environment in
# .venv and `pip install -e` of this folder with the versions pinned in pyproject.toml (without
# the test extra). This machine has no container engine: the tests lint this file (hadolint) and
# check it against the Makefile and the manifests, but do not build it.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ROWSTREAM_WEB_BIND=0.0.0.0 \
    ROWSTREAM_INGEST_BIND=0.0.0.0 \
    ROWSTREAM_DATA_DIR=/tmp/rowstream \
    PATH=/app/.venv/bin:$PATH

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rowstream

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY tables ./tables
COPY deploy ./deploy
RUN python -m venv .venv \
    && .venv/bin/python -m pip install --no-cache-dir --quiet -e .

USER 10001
EXPOSE 6066 6067
CMD ["faust", "-A", "app", "worker"]
