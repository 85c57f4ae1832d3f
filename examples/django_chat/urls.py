from __future__ import annotations

from django.urls import re_path

from examples.django_chat import views

urlpatterns = [
    re_path(r"^$", views.index, name="index"),
    re_path(r"^rooms/(?P<room>[A-Za-z0-9_-]{1,64})/messages$", views.messages, name="messages"),
]
