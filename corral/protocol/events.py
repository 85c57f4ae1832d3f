"""The vocabulary of the HTTP/1.1 core: its limits, the events it emits, its errors.

Shared by the reader (``reader.py``), the core (``http.py``) and the adapter; the
request and body events themselves are in ``request.py``, beside the head readers that
make them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias, final

from corral.protocol.request import Data, EndOfMessage, ParsedHead, Request

#: The default ceiling for a request head (request line plus headers), in bytes.
#: 16 KiB is h11's own default and what uvicorn and hypercorn use; nginx allows 8 KiB
#: per line with 4 lines, Apache 8 KiB per line.
DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024


class LocalProtocolError(Exception):
    """The caller used the core wrongly (for example sent a body after the end)."""


@final
@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """Limits applied by the core; the defaults are the server's defaults."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    #: Largest request body accepted, or ``None`` for no limit.
    max_body_bytes: int | None = None


@final
@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; answer ``status`` (if no response started) and close."""

    status: int
    reason: str


@final
@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A WebSocket upgrade request, handed over with the bytes read after its head."""

    request: Request
    trailing: bytes


@final
@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is over without an error to report.

    Either the peer closed its sending side with no request left to serve, or the core
    gave up reading after the response was complete (an unread body too long or
    malformed to discard), when nothing more may be written. Close the transport once
    any response in progress has been written.
    """


#: A head reader: ``parse_head`` or ``HttptoolsHeadReader.read`` (``--http``). Given a
#: checked head and the offset just past its blank line, it returns the request h11
#: would read, or None to leave the head to h11.
HeadReader: TypeAlias = Callable[[bytes, int], ParsedHead | None]

#: Everything the core emits. Request, body and end of message are the same events
#: whichever path read the request (see request.py).
Event: TypeAlias = Request | Data | EndOfMessage | UpgradeRequest | ProtocolError | ConnectionClosed
