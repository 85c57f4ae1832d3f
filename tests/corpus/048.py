"""A chunked body growing past max_body_bytes gets 413."""

EXPECT = {"limits": {"max_body_bytes": 4}, "status": 413}
