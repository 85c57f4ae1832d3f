"""The server side of the WebSocket opening handshake, through wsproto.

Theory of operation
-------------------
The HTTP core parsed the upgrade request once, with h11's grammar. :class:`Handshake`
checks it (:func:`~corral.protocol.ws_limits.check_handshake`, RFC 6455 section
4.2.1) before wsproto sees it, so the refusal's status (400, or 426) is ours to choose,
then hands the same parsed headers to wsproto's ``initiate_upgrade_connection``: one
parser, no re-serialised bytes from the network. After that it builds what the app
decides, and nothing else:

* :meth:`Handshake.accept`: the 101 response (section 4.2.2), with a fresh
  :class:`~corral.protocol.ws_limits.MessageGuard` and, when allowed, a
  :class:`~corral.protocol.ws_deflate.BoundedDeflate` to negotiate; it returns them
  with wsproto's frame-level connection, which the core reads frames with from then on.
* :meth:`Handshake.reject_head` and :meth:`Handshake.reject_body`: an HTTP response
  refusing the upgrade (ASGI ``websocket.http.response``), always ending in a close.

Rules: a refused request (:attr:`Handshake.refusal`) never reaches wsproto's state, and
misuse by the caller (a header the handshake sets itself, a subprotocol not offered, a
header or status h11 will not write) raises
:class:`~corral.protocol.ws_events.LocalProtocolError` before any byte is produced, so
the caller may still choose another answer. States are the core's (``websocket.py``);
this object only says what to send.

What this file must not know: the connection's state, frames, timers, the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import h11
from wsproto import ConnectionType, WSConnection
from wsproto import events as wsevents
from wsproto.utilities import RemoteProtocolError

from corral.protocol.request import Request
from corral.protocol.ws_deflate import BoundedDeflate
from corral.protocol.ws_events import LocalProtocolError
from corral.protocol.ws_limits import (
    RESPONSE_OWNED_HEADERS,
    MessageGuard,
    Refusal,
    WebSocketLimits,
    check_handshake,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from wsproto.connection import Connection
    from wsproto.extensions import Extension

__all__ = ["Handshake"]


@final
class Handshake:
    """One opening handshake: the checked request, and the responses wsproto builds.

    Attributes:
        refusal: Why the request cannot be accepted, else None. When set, nothing else
            may be called.
        subprotocols: Subprotocols the client offered, in its order of preference.
    """

    __slots__ = ("_limits", "_ws", "refusal", "subprotocols")

    def __init__(self, request: Request, trailing: bytes, limits: WebSocketLimits) -> None:
        self._limits = limits
        self._ws = WSConnection(ConnectionType.SERVER)
        self.refusal: Refusal | None = None
        self.subprotocols: list[str] = []
        checked = check_handshake(request)
        if isinstance(checked, Refusal):
            self.refusal = checked
            return
        self.subprotocols = checked
        if len(trailing) > limits.max_message_size:
            # The client must wait for the 101 before sending (section 4.1); one
            # maximum message of patience is all it gets.
            self.refusal = Refusal(400, "too much data before the handshake response")
            return
        try:
            self._ws.initiate_upgrade_connection(request.headers, request.target)
        except (RemoteProtocolError, UnicodeError):
            # wsproto's own checks (and its IDNA decode of Host) found something ours
            # let through; its verdict stands, with our status.
            self.refusal = Refusal(400, "handshake refused by wsproto")

    def accept(
        self, subprotocol: str | None, headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[bytes, Connection, MessageGuard, BoundedDeflate | None]:
        """The 101 response, wsproto's frame-level connection, the guard, and the
        inflater if permessage-deflate was negotiated (RFC 7692), else None.

        Raises:
            LocalProtocolError: ``subprotocol`` was not offered (RFC 6455 section
                4.2.2); a header is one the handshake sets itself or is not a valid
                header. Nothing changed: the caller may still reject.
        """
        extra = list(headers)
        for name, _ in extra:
            if name.lower() in RESPONSE_OWNED_HEADERS:
                raise LocalProtocolError(f"accept() sets the {name!r} header itself")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise LocalProtocolError(f"subprotocol {subprotocol!r} was not offered")
        # Fresh extension objects per attempt: negotiation mutates them, and a failed
        # attempt must not leave a half-negotiated one behind.
        guard = MessageGuard(self._limits)
        extensions: list[Extension] = [guard]
        deflate = None
        if self._limits.per_message_deflate:
            deflate = BoundedDeflate(self._limits.max_message_size)
            extensions.append(deflate)
        try:
            response = self._ws.send(
                wsevents.AcceptConnection(
                    subprotocol=subprotocol, extensions=extensions, extra_headers=extra
                )
            )
        except h11.LocalProtocolError as exc:
            # h11 refused a header (CR/LF would split the response) while building the
            # response, before anything was sent or any state moved.
            raise LocalProtocolError(f"invalid response header: {exc}") from exc
        conn = self._ws.connection
        assert conn is not None  # wsproto makes it when it accepts
        enabled = deflate if deflate is not None and deflate.enabled() else None
        return response, conn, guard, enabled

    def reject_head(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        """The head of a response refusing the upgrade, with ``Connection: close``
        in place of any Connection header (the client may have sent frames already,
        which HTTP cannot parse).

        Raises:
            LocalProtocolError: h11 refused the status or a header; nothing changed.
        """
        extra = [(name, value) for name, value in headers if name.lower() != b"connection"]
        extra.append((b"connection", b"close"))
        try:
            return self._ws.send(
                wsevents.RejectConnection(status_code=status, headers=extra, has_body=True)
            )
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"invalid rejection response: {exc}") from exc

    def reject_body(self, data: bytes, more: bool) -> bytes:
        """Part of the refusal's body; ``more=False`` ends it.

        Raises:
            LocalProtocolError: the body broke its Content-Length (the head is out: the
                response can only be ended by closing).
        """
        try:
            return self._ws.send(wsevents.RejectData(data=data, body_finished=not more))
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"invalid rejection body: {exc}") from exc
