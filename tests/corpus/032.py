"""A bare LF ending the chunked body would split the stream differently: 400."""

EXPECT = {"status": 400, "reason": "bare LF"}
