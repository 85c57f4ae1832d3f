"""A chunked body of exactly max_body_bytes is accepted."""

EXPECT = {"limits": {"max_body_bytes": 4}, "requests": [("POST", "/", b"abcd")]}
