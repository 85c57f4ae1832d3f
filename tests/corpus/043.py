"""A DEL (\x7f) byte in a header value gets 400."""

EXPECT = {"status": 400, "reason": "control character"}
