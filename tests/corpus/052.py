"""An HTTP version other than 1.0 and 1.1 gets 505."""

EXPECT = {"status": 505}
