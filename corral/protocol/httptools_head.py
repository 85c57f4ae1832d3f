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
Python: 4.0 against 5.5 us for a browser's 12-line head, the same 1.8 us for wrk's
one-line head).

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

from typing import final

import httptools

from corral.protocol.request import Headers, ParsedHead, frame


@final
class HttptoolsHeadReader:
    """Reads checked heads with llhttp. Not reentrant; one per worker is enough.

    Call :meth:`read` as :func:`corral.protocol.request.parse_head` is called.

    One llhttp parser serves head after head, as it would the requests of one
    keep-alive connection, while each head is a whole HTTP/1.1 message without a body
    after which llhttp itself expects another (most heads): it is then back at the
    start of a message. After anything else (an error, an upgrade, a body to come,
    HTTP/1.0, a close) the next head gets a new parser. Should a kept parser still
    refuse the next head, that head is read again by a new one, so a kept parser never
    decides anything.
    """

    __slots__ = ("_again", "_headers", "_parser", "_url", "heads_read")

    def __init__(self) -> None:
        #: Heads this reader read itself (the others went to ``h11.Connection``): for
        #: tests and debugging, one slot incremented per head.
        self.heads_read = 0
        self._url = b""
        self._headers: Headers = []
        # The head was a whole message after which llhttp expects another.
        self._again = False
        # The parser reading now, or kept for the next head; None: a new one next.
        self._parser: httptools.HttpRequestParser | None = None

    def read(self, head: bytes, end: int) -> ParsedHead | None:
        """Read ``head[:end]``, a head that passed ``check_head``, as h11 would."""
        parser = self._parser
        kept = parser is not None
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        headers: Headers = []
        self._headers = headers
        self._again = False
        try:
            parser.feed_data(head if end == len(head) else head[:end])
        # HttpParserUpgrade is not an HttpParserError (a test keeps it so): first.
        except httptools.HttpParserUpgrade:
            self._again = False  # CONNECT or an upgrade: the head is complete all the same
        except httptools.HttpParserError:
            self._parser = None
            if kept:
                # The kept parser may be what refused it: read it again with a new one
                # (``_parser`` is None now, so this goes one level deep at most).
                return self.read(head, end)
            return None
        method = parser.get_method()
        target = self._url
        # The request line exactly as h11's grammar has it, and the version from it.
        if head.startswith(b"%s %s HTTP/1.1\r\n" % (method, target)):
            parsed = frame(method, target, b"1.1", headers)
            if parsed is None:
                self._parser = None
                return None
            if not self._again:
                self._parser = None
            self.heads_read += 1
            return parsed
        self._parser = None
        if head.startswith(b"%s %s HTTP/1.0\r\n" % (method, target)):
            parsed = frame(method, target, b"1.0", headers)
            if parsed is not None:
                self.heads_read += 1
            return parsed
        return None

    # -- llhttp's callbacks (httptools looks them up by name) --------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value.rstrip(b" \t")))

    def on_message_complete(self) -> None:
        # Asked here: once feed_data returns, llhttp has forgotten the message's
        # Connection (and Proxy-Connection, which h11 ignores) and says "keep alive".
        parser = self._parser
        self._again = parser is not None and parser.should_keep_alive()
