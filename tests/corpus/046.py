"""B8: a head that never ends gets 431 once past the limit."""

EXPECT = {"limits": {"max_header_bytes": 128}, "status": 431}
