"""Reading a checked head with httptools (llhttp), for ``--http httptools``.

Theory of operation
-------------------
This is the second head reader of the HTTP core, beside ``request.parse_head``, with
the same signature and the same rule: it may only say "this is exactly the request h11
would read", never "this is an error". Whatever llhttp refuses, or reads in a way h11
might not, is declined (``None``), and the core hands the head to ``h11.Connection``,
which accepts it or refuses it with its own error. So ``--http httptools`` answers
every head the way ``--http h11`` does; only the cost of reading a plain one changes
(llhttp scans the header lines in C, where parse_head splits and checks them in
Python: about half the time for a browser's dozen headers).

Only the head goes through llhttp, never a body: a Content-Length body is counted by
the core, and a chunked one (Transfer-Encoding is declined in ``request.frame``) is read
by h11 with the core's raw checks around it. So the hardening of ``http.py`` (the raw
head checks before any reader, the framing checks after) is the same on both paths.

Where llhttp and h11 differ, and how each difference is declined:

* llhttp (as httptools builds it) accepts more than one space between the parts of the
  request line, and RTSP/ and ICE/ versions; h11 does not. So the request line is
  rebuilt from what llhttp read and must be the first line of the head, byte for byte.
* llhttp leaves the trailing whitespace on a field value; it is stripped here, as h11
  strips it (OWS, RFC 9110 section 5.6.3).
* llhttp knows a fixed list of methods, and refuses some targets h11 takes (``GET
  host:port``, a target starting with ``?``) and Content-Lengths over 2**64 - 1: those
  errors only send the head to h11, which reads it.
* A version other than 1.0 and 1.1, Transfer-Encoding, Expect and a doubtful
  Content-Length or Host count are declined by ``request.frame``, as for parse_head.

Everything else llhttp refuses at least as strictly as h11: a name that is not a token,
a target byte outside VCHAR (``check_head`` lets HTAB and obs-text through; llhttp
stops both), a line that is not a header field.
``tests/protocol/test_request.py`` runs the raw corpus and thousands of generated heads
through both readers and h11, and requires every answer to be h11's.

What this file must not know: sockets, clocks, ASGI, the response.
"""

from __future__ import annotations

from typing import Final, final

import httptools

from corral.protocol.request import Headers, ParsedHead, frame

_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0"}


@final
class HttptoolsHeadReader:
    """Reads checked heads with llhttp. Not reentrant; one per worker is enough.

    Call :meth:`read` as :func:`corral.protocol.request.parse_head` is called.
    """

    __slots__ = ("_headers", "_url")

    def __init__(self) -> None:
        self._url = b""
        self._headers: Headers = []

    def read(self, head: bytes, end: int) -> ParsedHead | None:
        """Read ``head[:end]``, a head that passed ``check_head``, as h11 would."""
        self._url = b""
        headers: Headers = []
        self._headers = headers
        parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(head if end == len(head) else head[:end])
        except httptools.HttpParserUpgrade:
            pass  # CONNECT or an upgrade: the head is complete all the same
        except httptools.HttpParserError:
            return None
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            return None
        method = parser.get_method()
        target = self._url
        if not head.startswith(b"%s %s HTTP/%s\r\n" % (method, target, version)):
            return None
        return frame(method, target, version, headers)

    # -- llhttp's callbacks (httptools looks them up by name) --------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value.rstrip(b" \t")))
