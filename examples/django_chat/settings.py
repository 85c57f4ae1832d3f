"""Settings of the chat example. Everything that differs per machine is an env var:

- ``DJANGO_CHAT_DB``: the sqlite file (default: ``django_chat.sqlite3`` in the temp dir,
  so nothing is written into the source tree);
- ``REDIS_URL``: the Redis server of the channel layer (default redis://127.0.0.1:6379/0);
- ``DJANGO_ALLOWED_HOSTS``: comma-separated (default 127.0.0.1, localhost and [::1]);
- ``DJANGO_DEBUG=1``, ``DJANGO_SECRET_KEY``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-key-for-the-corral-example-only")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "channels",
    "examples.django_chat.apps.ChatConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "examples.django_chat.urls"
ASGI_APPLICATION = "examples.django_chat.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_CHAT_DB")
        or str(Path(tempfile.gettempdir()) / "django_chat.sqlite3"),
        # Two worker processes write to one file: wait for the lock rather than fail.
        "OPTIONS": {"timeout": 20},
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")],
            "capacity": 1000,
        },
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
