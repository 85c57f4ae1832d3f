"""B14: an h2c upgrade with a chunked body is a plain request; the next one is served too."""

EXPECT = {"requests": [("POST", "/h2c", b"hello"), ("GET", "/next")]}
