"""A declared body over max_body_bytes gets 413 before any 100 Continue."""

EXPECT = {"limits": {"max_body_bytes": 4}, "status": 413, "continued": False}
