"""Settings of the reference project. Everything that differs per machine comes from the environment.

The integration's own settings are the `ETL` dict (see etl/conf.py for every key and its default).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BASE_DIR.parent.parent

# A reference project: a real deployment sets DJANGO_SECRET_KEY (and DEBUG off).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "reference-project-key-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "etl",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "etl_reference.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = "etl_reference.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DJANGO_DB_NAME", "etl_reference"),
        "HOST": os.environ.get("DJANGO_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("DJANGO_DB_PORT", "5432"),
        "USER": os.environ.get("DJANGO_DB_USER", "postgres"),
        "PASSWORD": os.environ.get("DJANGO_DB_PASSWORD", ""),
        # consume_events is long-running: keep its connection, check it before reuse.
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"etl": {"handlers": ["console"], "level": os.environ.get("ETL_LOG_LEVEL", "INFO")}},
}

# The worker is reached only through Pub/Sub (and, for replay, its CLI). Names must match the
# worker's ETL_REQUEST_TOPIC / ETL_EVENTS_TOPIC.
ETL: dict[str, Any] = {
    "GCP_PROJECT_ID": os.environ.get("GCP_PROJECT_ID", "etl-local"),
    "REQUEST_TOPIC": os.environ.get("ETL_REQUEST_TOPIC", "etl-run-requested"),
    "EVENTS_TOPIC": os.environ.get("ETL_EVENTS_TOPIC", "etl-run-events"),
    "EVENTS_SUBSCRIPTION": os.environ.get("ETL_EVENTS_SUBSCRIPTION", "etl-run-events-django"),
    "PUBLISH_MODE": os.environ.get("ETL_PUBLISH_MODE", "on_commit"),  # or "outbox"
    "SCHEMAS_DIR": os.environ.get("ETL_SCHEMAS_DIR", str(REPO_ROOT / "schemas")),
    # e.g. "etl-worker" or "python -m worker": `replay --run-id ID` is appended. Empty: the
    # dead-letter page shows the command for an operator to run instead.
    "REPLAY_COMMAND": shlex.split(os.environ.get("ETL_REPLAY_COMMAND", "")),
    "REPLAY_ENV": {},
    "ENVIRONMENT": os.environ.get("ETL_ENVIRONMENT") or None,
}
