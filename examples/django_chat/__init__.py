"""A Django + Channels chat: an HTTP page, a sqlite-backed view, a WebSocket room.

Run it under corral (see README.md, "Running real applications")::

    redis-server --port 6379 &
    export DJANGO_SETTINGS_MODULE=examples.django_chat.settings
    python -m django migrate
    corral examples.django_chat.asgi:application -w 2

Messages sent on ``ws://HOST/ws/chat/ROOM/`` are stored in sqlite and broadcast to every
client in the room through ``channels_redis``, so clients served by different worker
processes see each other's messages.
"""
