"""B5: obs-fold with a tab gets 400."""

EXPECT = {"status": 400, "reason": "folding"}
