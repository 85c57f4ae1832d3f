"""What the consumer and the HTTP view share: store a message, tell the room."""

from __future__ import annotations

import os
import re

from channels.layers import get_channel_layer

from examples.django_chat.models import Message

#: Room names: what the URL patterns accept, and a valid channels group name once prefixed.
ROOM = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TEXT = 2000


def group_name(room: str) -> str:
    return f"chat_{room}"


async def post(room: str, author: str, text: str) -> Message:
    """Store a message in sqlite, then broadcast it to the room through the channel layer.

    Every client of the room receives it, whichever worker process serves it: the
    channel layer (channels_redis) carries it between processes.
    """
    message = await Message.objects.acreate(
        room=room, author=author[:64] or "anonymous", text=text[:MAX_TEXT], worker_pid=os.getpid()
    )
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    await layer.group_send(group_name(room), {"type": "chat.message", **message.as_dict()})
    return message
