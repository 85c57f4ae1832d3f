from __future__ import annotations

import json
import os

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from examples.django_chat import chat
from examples.django_chat.models import Message


async def index(request: HttpRequest) -> HttpResponse:
    """The chat page: the rooms in the database, and a small WebSocket client."""
    rooms = [
        room
        async for room in Message.objects.values("room")
        .annotate(messages=Count("id"))
        .order_by("room")
    ]
    room = request.GET.get("room", "lobby")
    if not chat.ROOM.fullmatch(room):
        room = "lobby"
    return render(request, "chat/index.html", {"rooms": rooms, "room": room, "pid": os.getpid()})


@csrf_exempt  # a JSON API for scripts; the page itself posts over the WebSocket
@require_http_methods(["GET", "POST"])
async def messages(request: HttpRequest, room: str) -> HttpResponse:
    """GET: the room's last 100 messages from sqlite. POST {"author", "text"}: add one."""
    if request.method == "POST":
        try:
            data = json.loads(request.body)
            text = data["text"]
            if not isinstance(text, str):
                raise TypeError("text must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            return JsonResponse({"error": f"bad message: {exc}"}, status=400)
        message = await chat.post(room, str(data.get("author", "")), text)
        return JsonResponse(message.as_dict(), status=201)
    latest = Message.objects.filter(room=room).order_by("-id")[:100]
    found = [message.as_dict() async for message in latest]
    return JsonResponse({"room": room, "messages": found[::-1]})
