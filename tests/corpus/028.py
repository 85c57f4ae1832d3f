"""A Content-Length with a sign gets 400."""

EXPECT = {"status": 400}
