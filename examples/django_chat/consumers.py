from __future__ import annotations

import os
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from examples.django_chat import chat


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One WebSocket client in one room.

    On connect it joins the room's group and says hello with the pid of the worker
    serving it. Each ``{"author": ..., "text": ...}`` it receives is stored and broadcast;
    each broadcast of the room is sent on as ``{"type": "message", ...}``.
    """

    room = ""

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        # Join before accepting: once the client sees the hello, it gets every message.
        await self.channel_layer.group_add(chat.group_name(self.room), self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "room": self.room, "pid": os.getpid()})

    async def disconnect(self, code: int) -> None:
        if self.room:
            await self.channel_layer.group_discard(chat.group_name(self.room), self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("text"), str):
            await self.send_json({"type": "error", "error": "send {'text': ..., 'author': ...}"})
            return
        await chat.post(self.room, str(content.get("author", "")), content["text"])

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A broadcast from the channel layer (``"type": "chat.message"``)."""
        await self.send_json({"type": "message", **{k: v for k, v in event.items() if k != "type"}})
