"""HTTP/1.0 needs no Host and closes after the response."""

EXPECT = {"requests": [("GET", "/")], "close": True}
