"""B3: bytes other than CRLF after chunk data get 400 (CVE-2025-43859)."""

EXPECT = {"status": 400}
