"""B8: a head of exactly max_header_bytes (128 here) is accepted."""

EXPECT = {"limits": {"max_header_bytes": 128}, "requests": [("GET", "/")]}
