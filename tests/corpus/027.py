"""B4: a Content-Length of 40 nines gets 400 at once, not a hang."""

EXPECT = {"status": 400}
