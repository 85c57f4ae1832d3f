"""A transfer coding other than chunked gets 501."""

EXPECT = {"status": 501}
