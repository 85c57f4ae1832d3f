"""Three pipelined GETs in one write are served in order."""

EXPECT = {"requests": [("GET", "/1"), ("GET", "/2"), ("GET", "/3")]}
