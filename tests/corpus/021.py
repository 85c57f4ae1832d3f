"""B8: a 16 KiB head, the default limit exactly, is accepted."""

EXPECT = {"requests": [("GET", "/")]}
