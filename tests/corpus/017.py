"""HTAB and obs-text bytes are allowed inside a field value (RFC 9110 section 5.5)."""

EXPECT = {"requests": [("GET", "/")]}
