"""A bare CR inside the head gets 400."""

EXPECT = {"status": 400, "reason": "bare CR"}
