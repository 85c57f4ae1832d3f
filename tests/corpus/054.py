"""A TLS ClientHello sent to the plain port is refused at once."""

EXPECT = {"status": 400, "reason": "control character"}
