"""Pipelined requests sent before the client's EOF are all served, then the connection closes."""

EXPECT = {"eof": True, "requests": [("POST", "/", b"hi"), ("GET", "/last")], "close": True}
