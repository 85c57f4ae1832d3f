"""Two Transfer-Encoding headers get 501."""

EXPECT = {"status": 501}
