"""Whitespace between a field name and the colon gets 400 (RFC 9112 section 5.1)."""

EXPECT = {"status": 400}
