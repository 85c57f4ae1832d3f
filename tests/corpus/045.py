"""B8: a complete head over max_header_bytes (128 here) gets 431."""

EXPECT = {"limits": {"max_header_bytes": 128}, "status": 431}
