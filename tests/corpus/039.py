"""B5: two Host headers get 400."""

EXPECT = {"status": 400}
