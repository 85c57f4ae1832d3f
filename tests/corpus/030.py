"""B3: a chunk size of 21 hex digits gets 400."""

EXPECT = {"status": 400}
