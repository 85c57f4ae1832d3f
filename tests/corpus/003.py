"""A POST with a Content-Length body."""

EXPECT = {"requests": [("POST", "/form", b"a=1&b=hello")]}
