"""B1: Content-Length with Transfer-Encoding gets 400; the hidden request is never served."""

EXPECT = {"status": 400, "reason": "both Content-Length and Transfer-Encoding"}
