"""B5: HTTP/1.1 without Host gets 400."""

EXPECT = {"status": 400}
