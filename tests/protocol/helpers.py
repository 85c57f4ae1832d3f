"""Helpers for the HTTP core tests: a real h11 client joined to :class:`HTTPCore`.

:class:`ConnectionPair` wires the server core to ``h11.Connection(CLIENT)`` the way h11's
own ``tests/helpers.py`` wires two h11 connections: events go in on one side, bytes
come out on the other. Malformed requests are written as raw bytes and fed with
:meth:`ConnectionPair.feed`.

:func:`summarize` turns core events into short tuples so a test can compare a whole
exchange in one ``assert``; :func:`serve` plays the adapter's part (answer each request
after its body, then start the next cycle) and is shared with the corpus test.

Every core made here reads plain heads with :data:`READ_HEAD`. The ``head_reader``
fixture (conftest.py) runs a test once with each reader of ``--http``, so the corpus and
the hardening tests hold for both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import h11

from corral.protocol.http import (
    ConnectionClosed,
    Event,
    HeadReader,
    HTTPCore,
    HTTPLimits,
    ProtocolError,
    UpgradeRequest,
)
from corral.protocol.httptools_head import HttptoolsHeadReader
from corral.protocol.request import Data, EndOfMessage, Request, parse_head

#: The head readers of ``--http``, by name.
READERS: dict[str, HeadReader] = {"h11": parse_head, "httptools": HttptoolsHeadReader().read}

#: The reader of the cores made here (set per test by the ``head_reader`` fixture).
READ_HEAD: HeadReader = parse_head


def new_core(limits: HTTPLimits | None = None) -> HTTPCore:
    """A core with ``limits`` (the defaults if None) reading heads with :data:`READ_HEAD`."""
    return HTTPCore(limits or HTTPLimits(), READ_HEAD)


Headers = list[tuple[bytes, bytes]]

#: The Host header every well-formed HTTP/1.1 request in these tests carries.
HOST: Headers = [(b"host", b"example.com")]

Summary = tuple[object, ...]


def summarize(events: Iterable[Event]) -> list[Summary]:
    """Turn core events into tuples; adjacent body chunks are joined into one."""
    out: list[Summary] = []
    body = b""
    for event in events:
        if isinstance(event, Data):
            body += event.data
            continue
        if body:
            out.append(("data", body))
            body = b""
        if isinstance(event, Request):
            out.append(("request", event.method, event.target))
        elif isinstance(event, EndOfMessage):
            out.append(("end",))
        elif isinstance(event, ProtocolError):
            out.append(("error", event.status))
        elif isinstance(event, UpgradeRequest):
            out.append(("upgrade", event.request.target, event.trailing))
        else:
            assert isinstance(event, ConnectionClosed)
            out.append(("closed",))
    if body:
        out.append(("data", body))
    return out


def request_bytes(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: Headers | None = None,
    body: bytes = b"",
    *,
    version: bytes = b"1.1",
) -> bytes:
    """Serialise a request by hand (no validation), so any part can be malformed."""
    pairs = HOST if headers is None else headers
    lines = [b"%s %s HTTP/%s" % (method, target, version)]
    lines += [name + b": " + value for name, value in pairs]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class ConnectionPair:
    """An :class:`HTTPCore` joined to an h11 client connection.

    Requests sent with :meth:`send` or :meth:`request` go through ``client``, whose
    state machine then follows the exchange. Requests fed as raw bytes bypass it, so
    their responses are parsed by a fresh client that has "sent" a request with the
    method the server saw (the method decides whether a response has a body).
    """

    def __init__(self, limits: HTTPLimits | None = None) -> None:
        self.server = new_core(limits)
        self.client = h11.Connection(h11.CLIENT)
        # Methods of the requests the server has reported and not yet answered.
        self._methods: deque[bytes] = deque()
        # The request being answered went through ``client``.
        self._via_client = False

    # -- client to server ---------------------------------------------------------------

    def feed(self, data: bytes, *, eof: bool = False) -> list[Summary]:
        """Give raw bytes to the server; return its events, summarized."""
        self.server.receive_data(data)
        if eof:
            self.server.receive_eof()
        return self._summarize()

    def _summarize(self) -> list[Summary]:
        events = summarize(self.server.events_received())
        for event in events:
            method = event[1] if event[0] == "request" else None
            if isinstance(method, bytes):
                self._methods.append(method)
        return events

    def send(self, *events: h11.Event) -> list[Summary]:
        """Serialise client events with h11 and feed them to the server."""
        data = b"".join(self.client.send(event) or b"" for event in events)
        self._via_client = True
        return self.feed(data)

    def request(
        self,
        method: bytes = b"GET",
        target: bytes = b"/",
        headers: Headers | None = None,
        body: bytes | None = None,
    ) -> list[Summary]:
        """Send a whole request from the client; ``body`` adds a Content-Length."""
        headers = list(HOST if headers is None else headers)
        events: list[h11.Event] = []
        if body is not None:
            headers.append((b"content-length", b"%d" % len(body)))
            events.append(h11.Data(data=body))
        request = h11.Request(method=method, target=target, headers=headers)
        return self.send(request, *events, h11.EndOfMessage())

    # -- server to client ---------------------------------------------------------------

    def respond(
        self, status: int = 200, headers: Headers | None = None, body: bytes = b"ok"
    ) -> list[h11.Event]:
        """Send a whole response from the server; return what the client parsed."""
        if headers is None:
            headers = [(b"content-length", b"%d" % len(body))]
        self.server.send_response(status, headers)
        self.server.send_body(body)
        self.server.send_end()
        return self.parse(b"".join(self.server.data_to_send()))

    def parse(self, data: bytes) -> list[h11.Event]:
        """Parse one complete response as the client that sent its request would."""
        method = self._methods.popleft()
        if self._via_client:
            client = self.client
            self._via_client = False
        else:
            client = h11.Connection(h11.CLIENT)
            client.send(h11.Request(method=method, target=b"/", headers=HOST))
            client.send(h11.EndOfMessage())
        client.receive_data(data)
        events: list[h11.Event] = []
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return events
            assert isinstance(event, h11.Event)
            events.append(event)

    def next_cycle(self) -> list[Summary]:
        """Start the next cycle on both sides; return the server's new events."""
        self.server.start_next_cycle()
        if self.client.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
            self.client.start_next_cycle()
        return self._summarize()


def response_of(events: list[h11.Event]) -> tuple[int, Headers, bytes]:
    """The status, headers and body of a complete response the client parsed."""
    assert isinstance(events[0], h11.Response), events
    assert isinstance(events[-1], h11.EndOfMessage), events
    body = b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))
    return events[0].status_code, list(events[0].headers), body


def header(headers: Headers, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case), or ``None``."""
    values = [value for key, value in headers if key == name]
    assert len(values) <= 1, values
    return values[0] if values else None


def assert_rejected(events: list[Summary], server: HTTPCore, status: int) -> None:
    """The last event is a ProtocolError with ``status`` and the connection will close."""
    assert events[-1:] == [("error", status)], events
    assert server.close_expected()
    assert server.events_received() == []


# -- the adapter's part, for the corpus ---------------------------------------------------


@dataclass
class Outcome:
    """What happened to a byte stream served by :func:`serve`."""

    #: Requests answered, in order, as (method, target, body).
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: The status of the ProtocolError that ended the connection, if any.
    status: int | None = None
    #: The reason that came with it.
    reason: str = ""
    #: The server decided to close the connection.
    close: bool = False
    #: The target and trailing bytes of a WebSocket upgrade hand-over.
    upgrade: tuple[str, bytes] | None = None
    #: A ``100 Continue`` went out.
    continued: bool = False
    #: The bytes the client would have received, for the error-free part.
    sent: bytes = b""


@dataclass
class _Current:
    method: str = ""
    target: str = ""
    body: bytes = b""


def serve(
    raw: bytes,
    limits: HTTPLimits | None = None,
    *,
    piece: int | None = None,
    eof: bool = False,
) -> Outcome:
    """Serve ``raw`` as the adapter would; ``piece`` feeds it that many bytes at a time.

    Each request is answered ``200`` with its method as the body once its body is in
    (sending ``100 Continue`` first if asked, as an app reading the body would), and the
    next cycle starts unless the core expects a close.
    """
    core = new_core(limits)
    outcome = Outcome()
    current = _Current()
    step = piece or max(len(raw), 1)
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)]

    def drive() -> None:
        while True:
            events = core.events_received()
            if not events:
                return
            for event in events:
                if isinstance(event, Request):
                    current.method = event.method.decode()
                    current.target = event.target.decode()
                    current.body = b""
                    if core.they_are_waiting_for_100_continue:
                        core.send_continue()
                        outcome.continued = True
                elif isinstance(event, Data):
                    current.body += event.data
                elif isinstance(event, EndOfMessage):
                    outcome.requests.append((current.method, current.target, current.body))
                    answer = current.method.encode()
                    core.send_response(200, [(b"content-length", b"%d" % len(answer))])
                    core.send_body(answer)
                    core.send_end()
                    outcome.sent += b"".join(core.data_to_send())
                    if core.close_expected():
                        outcome.close = True
                        return
                    core.start_next_cycle()
                elif isinstance(event, ProtocolError):
                    outcome.status, outcome.reason = event.status, event.reason
                    outcome.close = core.close_expected()
                    return
                elif isinstance(event, UpgradeRequest):
                    outcome.upgrade = (event.request.target.decode(), event.trailing)
                    return
                else:
                    outcome.close = True
                    return

    for chunk in chunks:
        if outcome.close:
            break
        if outcome.upgrade is not None:
            # After the hand-over the adapter routes bytes to the WebSocket core.
            target, trailing = outcome.upgrade
            outcome.upgrade = (target, trailing + chunk)
            continue
        core.receive_data(chunk)
        drive()
    if eof and not outcome.close and outcome.upgrade is None:
        core.receive_eof()
        drive()
    return outcome
