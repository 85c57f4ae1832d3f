"""Transfer-Encoding in an HTTP/1.0 request is faulty framing (RFC 9112 section 6.1): 400."""

EXPECT = {"status": 400}
