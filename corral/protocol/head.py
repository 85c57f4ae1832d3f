"""Request-head hardening: what every head must be before any parser reads it.

``http.py``'s theory of operation says why (a difference between two parsers of one
byte stream is a request-smuggling vector); this module is the check itself, kept apart
so the reader and the tests use one definition.
"""

from __future__ import annotations

import re
from typing import Final

# Every byte that may appear inside a head line: VCHAR, SP, HTAB and obs-text
# (RFC 9110 section 5.5). Deleting them leaves only CR, LF and forbidden control bytes.
_LINE_BYTES: Final = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))

# Control bytes that may not appear anywhere in a head. CR and LF are checked apart,
# as line ends; HTAB is allowed in field values (RFC 9110 section 5.5).
_CONTROL_BYTES: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# A line that starts with whitespace continues the previous one (RFC 9112 section 5.2).
# Only used once every LF is known to follow a CR.
_OBS_FOLD: Final = re.compile(rb"\r\n[ \t]")


def has_control_bytes(buf: bytes | bytearray, start: int = 0) -> bool:
    """Whether ``buf[start:]`` holds a byte no head may contain (not CR or LF, which
    are line ends, nor HTAB): binary garbage is refused before the head is complete."""
    return _CONTROL_BYTES.search(buf, start) is not None


def check_head(head: bytes | bytearray, end: int | None = None) -> str | None:
    """Say what is wrong with a complete request head, or ``None`` if nothing is.

    ``head[:end]`` runs from the request line to the blank line that ends it, inclusive
    (``end`` defaults to the whole of ``head``).
    """
    if end is not None and end != len(head):
        head = head[:end]
    # The fast path is two C-speed passes and a regex search (about 1 us for a 400-byte
    # head): what is left after deleting the line bytes must be exactly the CRLF pairs,
    # so no bare CR, bare LF or control byte is present.
    if len(head.translate(None, _LINE_BYTES)) == 2 * head.count(b"\r\n"):
        if _OBS_FOLD.search(head) is None:
            return None
        return "obsolete line folding"  # RFC 9112 section 5.2
    # Something is wrong: find out what, for the log line.
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf:
        return "bare LF line ending"  # RFC 9112 section 2.2
    if head.count(b"\r") != crlf:
        return "bare CR in request head"  # RFC 9112 section 2.2
    return "control character in request head"  # RFC 9110 section 5.5
