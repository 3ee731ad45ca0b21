# syntax=docker/dockerfile:1
# The cryptomon image: `docker build -t cryptomon .` at the repository's root (see the
# README's "Deployment"). At the root, not in deploy/, so that the build context is the
# repository (the package needs src/, both migrations folders, pyproject.toml and the
# README its metadata names) and the plain `docker build .` works without -f.

# Build the wheel in a stage of its own: the final image holds the installed package,
# not the source tree nor the build backend.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
COPY migrations_postgres ./migrations_postgres
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Mounted from the build stage rather than copied: the wheel leaves no layer behind.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl

# A fixed, numeric non-root user: a bind-mounted data directory can be given to uid 10001
# on the host, and Kubernetes' runAsNonRoot can check a number.
RUN groupadd --system --gid 10001 cryptomon \
    && useradd --system --uid 10001 --gid cryptomon --home-dir /var/lib/cryptomon \
        --shell /usr/sbin/nologin cryptomon \
    && mkdir -p /var/lib/cryptomon/data \
    && chown -R cryptomon:cryptomon /var/lib/cryptomon
# The image's config: the bundled catalogue, reads behind a read token (see the file).
COPY deploy/image.toml /etc/cryptomon/cryptomon.toml

# The default database is data/cryptomon.db relative to the working directory, so the
# SQLite log (and its snapshots and archive beside it) lands in the volume, and
# `docker exec ... python -m cryptomon verify` finds it with no --db.
WORKDIR /var/lib/cryptomon
USER 10001:10001
VOLUME ["/var/lib/cryptomon/data"]
EXPOSE 7860

# slim has no curl: Python asks /health, and an answer other than 2xx (a 503 when one of
# cryptomon's own parts fails, never for a provider) or none makes it exit non-zero. The
# start period covers folding a long log's tail before the service listens.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=4)"]

# The entry point is the command line, so `docker run cryptomon verify` (or replay,
# export, check-config) runs a subcommand; with no arguments it serves. 0.0.0.0: inside
# its own network namespace the container is reached only through the ports published.
ENTRYPOINT ["python", "-m", "cryptomon"]
CMD ["serve", "--host", "0.0.0.0", "--config", "/etc/cryptomon/cryptomon.toml"]
