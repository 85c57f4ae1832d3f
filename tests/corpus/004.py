"""A chunked POST with a chunk extension and a trailer section."""

EXPECT = {"requests": [("POST", "/upload", b"hello world")]}
