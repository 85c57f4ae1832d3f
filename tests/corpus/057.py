"""A chunk-size line that never ends gets 431 once past the limit (h11's own bound)."""

EXPECT = {"limits": {"max_header_bytes": 128}, "status": 431}
