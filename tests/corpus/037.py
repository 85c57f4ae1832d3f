"""B5: obs-fold (a line starting with a space) gets 400."""

EXPECT = {"status": 400, "reason": "folding"}
