"""A plain GET is served and the connection stays open."""

EXPECT = {"requests": [("GET", "/")]}
