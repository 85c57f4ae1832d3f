"""B8: a head one byte over the default 16 KiB limit gets 431."""

EXPECT = {"status": 431}
