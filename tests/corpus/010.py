"""An absolute-form target is accepted (RFC 9112 section 3.2.2)."""

EXPECT = {"requests": [("GET", "http://example.com/x?y=1")]}
