"""A WebSocket upgrade is handed over with the bytes that followed its head."""

EXPECT = {"upgrade": ("/chat", b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")}
