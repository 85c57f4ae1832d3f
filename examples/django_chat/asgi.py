"""ASGI entry points of the chat example.

- ``application``: HTTP through Django, WebSocket through Channels (what to serve);
- ``django_application``: Django's own ``get_asgi_application()``, HTTP only, exactly
  what ``django-admin startproject`` puts in ``asgi.py``.

Neither handles the ASGI lifespan scope; corral's default ``--lifespan auto`` notices
and carries on without it.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_chat.settings")

# Set up Django (apps, models) before importing anything that uses the ORM.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from examples.django_chat.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        # Refuse WebSockets opened by pages of other sites (cross-site WebSocket hijacking).
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
