"""One ASGI HTTP request/response cycle (HTTP spec 2.5).

The cycle owns the ``receive``/``send`` pair given to the app for one request. Its
state is an Enum, never a set of booleans:

    AWAIT_START --http.response.start--> HEAD_HELD --first body--> STREAMING
    HEAD_HELD / STREAMING --body with more_body=False--> DONE
    AWAIT_START / HEAD_HELD / STREAMING --app raised, returned early, broke the
        protocol, or was cancelled--> FAILED

The response head is held until the first body message (the spec allows it), so an
exception, an invalid header or a first body longer than its Content-Length found when
the head is finally serialised still becomes a clean 500; and the head and the first
chunk go out in one write. Once STREAMING, a failure can only cut the connection: a
truncated body must never look complete.

The cycle knows its connection only as a :class:`~corral.workers.channel.RequestChannel`
(it never touches a protocol core, a transport or the worker's shared state), so the
same cycle runs on an HTTP/1.1 connection or an HTTP/2 stream. The scope comes ready
made (``scope.py``).

``disconnected`` is not a state but a fact about the peer: it can become true in any
state, after which ``send`` raises :class:`ClientDisconnected` (an ``OSError``, spec
2.4) and ``receive`` returns ``http.disconnect``. An EOF from the client is weaker: the
rest of the body is still delivered and ``send`` still works, but a ``receive`` waiting
after the body returns ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from time import perf_counter
from typing import IO, Any, final

from corral.protocol.http import LocalProtocolError
from corral.workers.channel import RequestChannel
from corral.workers.types import ASGIApp, ClientDisconnected, Message

logger = logging.getLogger("corral.error")

#: The zero-copy file extensions, advertised in every HTTP scope.
_FILE_MESSAGES = frozenset({"http.response.pathsend", "http.response.zerocopysend"})

#: Request body bytes buffered for the app before reading from the socket pauses.
#: Matches uvicorn's HIGH_WATER_LIMIT; a larger value buys nothing once the app reads.
BODY_HIGH_WATER_BYTES = 64 * 1024


class CycleState(enum.Enum):
    AWAIT_START = "await-start"
    HEAD_HELD = "head-held"
    STREAMING = "streaming"
    DONE = "done"
    FAILED = "failed"


@final
class RequestCycle:
    """Runs the app for one request and translates its messages for the channel."""

    __slots__ = (
        "_body",
        "_body_size",
        "_channel",
        "_continue_checked",
        "_end_delivered",
        "_headers",
        "_input_closed",
        "_no_body",
        "_waiter",
        "bytes_sent",
        "disconnected",
        "method",
        "more_body",
        "scope",
        "started_at",
        "state",
        "status",
        "target",
    )

    def __init__(
        self, channel: RequestChannel, scope: dict[str, Any], method: bytes, target: bytes
    ) -> None:
        self._channel = channel
        self.scope = scope
        #: The request line's method and target as received (for the access log).
        self.method = method
        self.target = target
        self.state = CycleState.AWAIT_START
        self._body: list[bytes] = []
        self._body_size = 0
        self.more_body = True
        self.disconnected = False
        self._input_closed = False  # the client sent EOF (it may still read)
        self._waiter: asyncio.Future[None] | None = None
        self._continue_checked = False
        self._end_delivered = False
        self.status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        # RFC 9110 sections 9.3.2, 15.3.5, 15.4.5: no body on HEAD, 204 and 304.
        self._no_body = method == b"HEAD"
        self.bytes_sent = 0
        # For the access log's duration: perf_counter, not the loop's clock, which is
        # 1 ms coarse on uvloop (whole milliseconds, 0.0 for most fast requests).
        self.started_at = perf_counter()

    # -- events from the connection --------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        self._body.append(data)
        self._body_size += len(data)
        if self._body_size > BODY_HIGH_WATER_BYTES:
            self._channel.pause_reading_for_body()
        self._wake()

    def feed_end(self) -> None:
        self.more_body = False
        self._wake()

    def input_ended(self) -> None:
        """The client closed its sending side: a receive() waiting past the body ends."""
        self._input_closed = True
        self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the app -----------------------------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        """Run the app to the end; only cancellation propagates.

        Error handling: an exception from the app is logged (except
        :class:`ClientDisconnected`, which only says the client left) and the response
        becomes a 500, or is cut if it already started. An app that returns without
        finishing its response is treated the same way (logged unless the client left).
        """
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            self._fail()  # the client left: normal, not an error (spec 2.4)
        except asyncio.CancelledError:
            self._fail()
            raise
        except Exception as exc:
            logger.error("exception in ASGI application", exc_info=exc)
            self._fail()
        else:
            if self.state is not CycleState.DONE:
                # Not an error if the app was told the client had gone.
                if not self.disconnected and not self._input_closed:
                    logger.error("ASGI application returned without completing the response")
                self._fail()
        finally:
            self._channel.cycle_finished(self.state is CycleState.DONE)

    def _fail(self) -> None:
        """End a cycle that did not complete: 500 if nothing was written, else cut it."""
        state = self.state
        if state is CycleState.DONE or state is CycleState.FAILED:
            return
        self.state = CycleState.FAILED
        if self.disconnected:
            return
        if state is CycleState.STREAMING:
            self._channel.cut(self)  # a truncated body must not look complete
        else:
            self._channel.send_error(500, self)

    async def receive(self) -> Message:
        channel = self._channel
        if not self._continue_checked:
            # RFC 9110 section 10.1.1: send 100 only once the app asks for the body, and
            # only while no final response has been written. Asked once: a client that
            # does not wait for a 100 at the first receive() never starts to.
            self._continue_checked = True
            state = self.state
            if (
                channel.expects_continue()
                and not self.disconnected
                and (state is CycleState.AWAIT_START or state is CycleState.HEAD_HELD)
            ):
                channel.send_continue()
        if not self._body and self.more_body and self._waiting_allowed():
            channel.wait_for_body()
            try:
                while not self._body and self.more_body and self._waiting_allowed():
                    waiter = self._waiter = channel.loop.create_future()
                    await waiter
            finally:
                channel.body_wait_over()
        if self._waiting_allowed() and (
            self._body or (not self.more_body and not self._end_delivered)
        ):
            chunks = self._body
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._body = []
            self._body_size = 0
            if self.more_body:
                channel.resume_reading_for_body()
            else:
                self._end_delivered = True
            return {"type": "http.request", "body": body, "more_body": self.more_body}
        # The body is over: wait for the client to go or the response to end (long-poll).
        # A client that closed only its sending side counts as gone here (most clients
        # that leave close both sides, and apps wait on this to notice it), while send()
        # keeps working for one that only half-closed.
        while self._waiting_allowed() and not self._input_closed:
            waiter = self._waiter = channel.loop.create_future()
            await waiter
        return {"type": "http.disconnect"}

    def _waiting_allowed(self) -> bool:
        state = self.state
        return (
            not self.disconnected
            and state is not CycleState.DONE
            and state is not CycleState.FAILED
        )

    async def send(self, message: Message) -> None:
        """Take one ASGI message from the app.

        Raises:
            ClientDisconnected: the client has gone (spec 2.4); not an error.
            RuntimeError: the message is out of order or invalid, or the body does not
                match its Content-Length (the connection is then closed).
        """
        if self.disconnected:
            raise ClientDisconnected("client disconnected")
        kind = message["type"]
        state = self.state
        if state is CycleState.AWAIT_START:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            status = message["status"]
            if type(status) is not int or not 200 <= status <= 999:
                raise RuntimeError(f"invalid HTTP status {status!r}")
            self.status = status
            self._headers = list(message.get("headers", ()))
            if status == 204 or status == 304:
                self._no_body = True
            self.state = CycleState.HEAD_HELD
            return
        if state is not CycleState.HEAD_HELD and state is not CycleState.STREAMING:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after the response ended")
        if kind != "http.response.body":
            if kind in _FILE_MESSAGES:
                await self._send_file(message, kind, state)
                return
            raise RuntimeError(f"expected 'http.response.body', got {kind!r}")
        body = message.get("body", b"")
        if type(body) is not bytes:
            if not isinstance(body, (bytearray, memoryview)):
                raise RuntimeError(f"response body must be bytes, not {type(body).__name__}")
            body = bytes(body)
        more = message.get("more_body", False)
        channel = self._channel
        try:
            if state is CycleState.HEAD_HELD and not more:
                # The usual answer, one body message: head, body and end in one call.
                # Invalid names or values (response splitting) are refused here.
                whole = b"" if self._no_body else body
                channel.send_response(self.status, self._headers, whole)
                self.bytes_sent = len(whole)
            else:
                if state is CycleState.HEAD_HELD:
                    channel.send_response(self.status, self._headers)
                    self.state = CycleState.STREAMING
                if body and not self._no_body:
                    channel.send_body(body)
                    self.bytes_sent += len(body)
                if not more:
                    channel.send_end()
        except LocalProtocolError as exc:
            # A bad head, or a body that does not match its Content-Length (RFC 9112
            # section 6.3): this response cannot be sent.
            self._refused(state)
            raise RuntimeError(f"invalid response: {exc}") from None
        if not more:
            channel.flush()
            self.state = CycleState.DONE
            self._wake()  # a receive() waiting for the end returns http.disconnect
            channel.response_finished(self)
            return
        # More to come: chunks sent in one go leave in one write (see flush_soon).
        channel.flush_soon()
        if channel.write_paused:
            await channel.wait_writable()
            if self.disconnected:
                raise ClientDisconnected("client disconnected")

    def _refused(self, state: CycleState) -> None:
        """The channel refused the response (LocalProtocolError) in ``state``: answer 500
        if its head was never written, else cut it."""
        self.state = CycleState.FAILED
        channel = self._channel
        if state is CycleState.HEAD_HELD:
            channel.discard_unsent()  # the head was never written: drop it, answer 500
            self.bytes_sent = 0
            channel.send_error(500, self)
        else:
            channel.cut(self)

    def _done(self) -> None:
        """The last byte is out: the response is complete (``send`` does this inline)."""
        self.state = CycleState.DONE
        self._wake()
        self._channel.response_finished(self)

    async def _send_file(self, message: Message, kind: str, state: CycleState) -> None:
        """``http.response.pathsend`` and ``http.response.zerocopysend``: a file's bytes
        go to the socket by sendfile(2), never through Python.

        pathsend names a whole file and ends the response; it must directly follow
        ``http.response.start``, and a missing Content-Length is taken from the file.
        zerocopysend takes an open file (``offset`` and ``count`` optional) and may be
        mixed with body messages (``more_body`` as for them).
        """
        channel = self._channel
        opened: IO[bytes] | None = None
        try:
            if kind == "http.response.pathsend":
                if state is not CycleState.HEAD_HELD:
                    raise RuntimeError("http.response.pathsend must follow the response start")
                try:
                    # One open(2) of a local file; the bytes move later, by sendfile.
                    opened = file = open(str(message["path"]), "rb")  # noqa: ASYNC230, SIM115
                except OSError as exc:
                    raise RuntimeError(f"http.response.pathsend: {exc}") from None
                offset, count, more = 0, os.fstat(file.fileno()).st_size, False
                if not any(name.lower() == b"content-length" for name, _ in self._headers):
                    self._headers.append((b"content-length", b"%d" % count))
            else:
                file = message["file"]
                fd = file.fileno()
                given_offset = message.get("offset")
                offset = os.lseek(fd, 0, os.SEEK_CUR) if given_offset is None else int(given_offset)
                given_count = message.get("count")
                count = (
                    max(0, os.fstat(fd).st_size - offset)
                    if given_count is None
                    else int(given_count)
                )
                more = bool(message.get("more_body", False))
            if self.state is CycleState.HEAD_HELD:
                channel.send_response(self.status, self._headers)
                self.state = CycleState.STREAMING
            if not self._no_body:
                await channel.send_file(file, offset, count)
                self.bytes_sent += count
        except LocalProtocolError as exc:
            # Raised before any byte of the file was written (see RequestChannel).
            self._refused(state)
            raise RuntimeError(f"invalid response: {exc}") from None
        except BaseException:
            # Failing before the head was framed (a bad path, a pathsend out of order)
            # is left to run(), which still answers 500; once streaming, cut.
            if self.state is CycleState.STREAMING:
                self.state = CycleState.FAILED
                channel.cut(self)
            raise
        finally:
            if opened is not None:
                opened.close()
        if more:
            return
        channel.send_end()
        channel.flush()
        self._done()
