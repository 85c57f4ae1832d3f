"""B5: one bare LF among CRLF lines gets 400."""

EXPECT = {"status": 400, "reason": "bare LF"}
