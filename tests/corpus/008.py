"""B11: after Connection: close the rest of the write is never parsed, so no 400."""

EXPECT = {"requests": [("GET", "/")], "close": True}
