"""A space inside the request target gets 400."""

EXPECT = {"status": 400}
