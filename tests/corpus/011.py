"""B2: a repeated Content-Length with the same value is accepted."""

EXPECT = {"requests": [("POST", "/", b"abc")]}
