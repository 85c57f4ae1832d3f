"""B1: the same smuggling attempt pipelined after a valid request is refused when reached."""

EXPECT = {"requests": [("GET", "/")], "status": 400}
