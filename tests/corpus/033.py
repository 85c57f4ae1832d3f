"""A bare LF ending the trailer section gets 400."""

EXPECT = {"status": 400}
