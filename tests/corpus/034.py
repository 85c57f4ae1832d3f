"""B5: bare LF line endings get 400 as soon as the head ends."""

EXPECT = {"status": 400, "reason": "bare LF"}
