"""A HEAD request is served like a GET."""

EXPECT = {"requests": [("HEAD", "/file")]}
