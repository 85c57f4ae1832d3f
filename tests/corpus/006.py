"""Empty lines before the request line are ignored (RFC 9112 section 2.2)."""

EXPECT = {"requests": [("GET", "/")]}
