"""B2: two Content-Length headers with different values get 400."""

EXPECT = {"status": 400}
