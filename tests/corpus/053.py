"""A malformed request pipelined after a good one is refused after the first response."""

EXPECT = {"requests": [("GET", "/ok")], "status": 400}
