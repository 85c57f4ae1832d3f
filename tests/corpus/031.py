"""B3: a bare LF inside a chunk extension gets 400."""

EXPECT = {"status": 400}
