"""A \x01 byte in a header value gets 400."""

EXPECT = {"status": 400, "reason": "control character"}
