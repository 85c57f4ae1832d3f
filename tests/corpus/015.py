"""Upgrade: websocket without Connection: upgrade is ignored (RFC 9110 section 7.8)."""

EXPECT = {"requests": [("GET", "/chat")]}
