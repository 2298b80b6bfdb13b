# Funnelwerk production image: gunicorn serving config.wsgi, also used for the Celery worker, beat
# and the one-shot migrate job (see docker-compose.yml). Configuration comes only from the
# environment at run time; nothing secret is baked into the image.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: a virtualenv with the runtime dependencies, and the collected static files --------
FROM ${PYTHON_IMAGE} AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /app

# Dependencies get their own layer, rebuilt only when pyproject.toml changes: at this point no
# package directory exists yet, so `pip install .` installs the pinned dependencies (no dev extras)
# and an empty funnelwerk distribution.
COPY pyproject.toml README.md ./
RUN pip install .

# The application itself (the .dockerignore keeps .venv, var, .env, tests and caches out).
COPY . .
RUN pip install --no-deps --force-reinstall .

# collectstatic needs the production settings to import, and those refuse to load without
# SECRET_KEY, ALLOWED_HOSTS and DATABASE_URL. The dummy values below exist only for this one
# command (no database is contacted) and only in this build stage: they are neither ENV nor ARG,
# so they never reach the final image or its environment.
RUN DJANGO_SETTINGS_MODULE=config.settings.production \
    SECRET_KEY=collectstatic-only-dummy-value-not-used-at-runtime \
    ALLOWED_HOSTS=localhost \
    DATABASE_URL=postgres://collectstatic:collectstatic@localhost:5432/collectstatic \
    python manage.py collectstatic --noinput


# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# PYTHONPATH=/app: the code runs from the source tree, not from the copy pip put into
# site-packages, because settings find templates/, static/ and staticfiles/ relative to
# config/settings/base.py (BASE_DIR).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    FUNNELWERK_VAR_DIR=/app/var

RUN groupadd --system --gid 10001 funnelwerk \
    && useradd --system --uid 10001 --gid funnelwerk --home-dir /app/var --no-create-home \
       --shell /usr/sbin/nologin funnelwerk

WORKDIR /app

# Code and static files stay owned by root (read-only for the app); only var/ is writable. The
# code is byte-compiled here because the app user cannot write __pycache__ at run time.
COPY --from=builder /opt/venv /opt/venv
COPY . /app
COPY --from=builder /app/staticfiles /app/staticfiles
RUN python -m compileall -q /app \
    && mkdir -p /app/var/media \
    && chown -R funnelwerk:funnelwerk /app/var

USER funnelwerk:funnelwerk

EXPOSE 8000

# GET /healthz also checks the database. The Host header is the first usable ALLOWED_HOSTS entry
# (else Django answers 400), and X-Forwarded-Proto: https keeps SECURE_SSL_REDIRECT from answering
# with a redirect (production settings trust that header from the proxy in front of gunicorn).
# Worker, beat and migrate containers serve no HTTP: docker-compose.yml disables it for them.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request as r; \
hosts = [h.strip().lstrip('.') for h in os.environ.get('ALLOWED_HOSTS', '').split(',')]; \
host = next((h for h in hosts if h and '*' not in h), 'localhost'); \
req = r.Request('http://127.0.0.1:8000/healthz', headers={'Host': host, 'X-Forwarded-Proto': 'https'}); \
raise SystemExit(r.urlopen(req, timeout=4).status != 200)"

# WEB_CONCURRENCY (gunicorn worker processes) is read when the container starts.
CMD ["sh", "-c", "exec gunicorn config.wsgi:application --bind 0.0.0.0:8000 --workers \"${WEB_CONCURRENCY:-2}\" --access-logfile -"]
