"""EOF in the middle of a body gets 400."""

EXPECT = {"eof": True, "status": 400}
