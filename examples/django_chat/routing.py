from __future__ import annotations

from django.urls import re_path

from examples.django_chat.consumers import ChatConsumer

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room>[A-Za-z0-9_-]{1,64})/$", ChatConsumer.as_asgi()),
]
