"""A GET with a query string and common browser headers."""

EXPECT = {"requests": [("GET", "/search?q=corral&page=2")]}
