"""EOF in the middle of a head is a plain close, not an error."""

EXPECT = {"eof": True, "close": True}
