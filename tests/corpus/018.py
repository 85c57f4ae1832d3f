"""A POST with Content-Length: 0 has an empty body."""

EXPECT = {"requests": [("POST", "/")]}
