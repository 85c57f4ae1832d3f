"""B2: a Content-Length list with different values gets 400."""

EXPECT = {"status": 400}
