"""Forwarding headers from trusted proxies: ``--proxy-headers``, ``--forwarded-allow-ips``.

Behind a reverse proxy the TCP peer is the proxy; the client's address, the scheme it
used and the host it asked for arrive in headers the proxy adds. Anyone can send those
headers, so they are believed only from a trusted peer, and only as far as the chain of
trusted proxies goes.

Rules (ASGI scope fields changed; nothing else):

- Trust is decided once per connection, from the peer address (``trusts``): an IP in
  ``--forwarded-allow-ips`` (addresses and CIDR networks), ``unix`` for unix-socket
  peers, ``*`` for everyone. The per-request work is one pass over the headers.
- From an untrusted peer every forwarding header is removed from the scope: the app
  must not be fooled either (research/protocol.md B24).
- From a trusted peer only the configured kind is used (``--forwarded-headers``:
  ``x-forwarded`` or RFC 7239 ``forwarded``); the other kind is removed, because a
  proxy that does not set it passes the client's copy through untouched.
- The client is the rightmost address that is not a trusted proxy: each proxy appends
  the address it received the request from, so everything left of the first untrusted
  address was written by the client itself. If every address is trusted, the leftmost
  one is the client. Multiple headers of one name are joined in order (RFC 9110
  section 5.3). An address that is not an IP (``unknown``, an obfuscated RFC 7239
  identifier, garbage) makes the client unknown (``None``), never a made-up string.
- Scheme and host are those seen by the outermost trusted proxy. ``Forwarded`` keeps
  them in the same element as the client's ``for=``. The ``X-Forwarded-*`` headers
  are separate lists: with n trusted proxies in the chain the value is the n-th from
  the right, or the leftmost when there are fewer (most proxies overwrite these headers
  instead of appending, leaving one value).
- Scheme: only http, https (ws, wss on WebSocket). Host: replaces the ``Host`` header.
  ``X-Forwarded-Port``: replaces the port of the ``Host`` header. ``server`` (the
  listening address) and ``root_path`` (``--root-path`` only; no header changes it)
  are never touched.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any, final

X_FOR, X_PROTO, X_HOST, X_PORT = (
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-port",
)
FORWARDED = b"forwarded"
X_FORWARDED = frozenset({X_FOR, X_PROTO, X_HOST, X_PORT})
ALL_FORWARDING = X_FORWARDED | {FORWARDED}

SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
WS_SCHEMES = {"http": "ws", "https": "wss"}

#: What a forwarded host may look like: a reg-name, IPv4 or [IPv6] with an optional port
#: (RFC 9110 section 7.2). Anything else is ignored rather than handed to the app.
_HOST = re.compile(r"(?:[A-Za-z0-9._~%!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: (client, whether to set it, scheme, host, port), or None to change nothing.
_Result = tuple[tuple[str, int] | None, bool, str | None, str | None, str | None] | None


@final
class TrustedPeers:
    """The set ``--forwarded-allow-ips`` describes."""

    __slots__ = ("everyone", "networks", "unix")

    def __init__(self, entries: Iterable[str]) -> None:
        """Parse the entries.

        Raises:
            ValueError: an entry is not an IP address, a CIDR network, ``unix`` or ``*``.
        """
        entries = list(entries)
        self.everyone = "*" in entries
        self.unix = self.everyone or "unix" in entries
        self.networks: list[IPNetwork] = [
            ipaddress.ip_network(e, strict=False) for e in entries if e not in ("*", "unix")
        ]

    def trusts(self, host: str | None) -> bool:
        """Whether the peer ``host`` (None for a unix-socket peer) is a trusted proxy."""
        if self.everyone:
            return True
        if host is None:
            return self.unix
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(address in network for network in self.networks)


@final
class ProxyHeaders:
    """Applies the forwarding headers of trusted peers to scopes (see the module doc)."""

    __slots__ = ("_rfc7239", "peers")

    def __init__(self, allow: Iterable[str], kind: str = "x-forwarded") -> None:
        """Trust the peers in ``allow``; believe the headers of ``kind``.

        Raises:
            ValueError: an entry of ``allow`` is invalid (see :class:`TrustedPeers`).
        """
        self.peers = TrustedPeers(allow)
        self._rfc7239 = kind == "forwarded"

    def trusts(self, client: tuple[str, int] | None, *, unix: bool) -> bool:
        """Whether the peer of a connection is a trusted proxy. Call once per connection.

        ``client`` is the TCP peer (None if unknown); ``unix`` says the connection came
        through a unix socket (which has no peer address).
        """
        if unix:
            return self.peers.unix
        if client is None:
            return self.peers.everyone
        return self.peers.trusts(client[0])

    def apply(self, scope: dict[str, Any], trusted: bool) -> None:
        """Rewrite ``client``, ``scheme`` and the ``Host`` header of a fresh HTTP or
        WebSocket scope, or strip the forwarding headers if the peer is not ``trusted``.

        ``scope["headers"]`` must be a list of this request's own (lowercase names).
        """
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        found = [name for name, _ in headers if name in ALL_FORWARDING]
        if not found:
            return
        use = ({FORWARDED} if self._rfc7239 else X_FORWARDED) if trusted else frozenset()
        if any(name not in use for name in found):
            scope["headers"] = headers = [
                h for h in headers if h[0] not in ALL_FORWARDING or h[0] in use
            ]
        if not trusted:
            return
        values: dict[bytes, list[str]] = {}
        for name, value in headers:
            if name in use:
                text = value.decode("latin-1")
                values.setdefault(name, []).append(text)
        if self._rfc7239:
            result = self._from_forwarded(",".join(values.get(FORWARDED, ())))
        else:
            result = self._from_x_forwarded(values)
        if result is None:
            return
        client, changed, scheme, host, port = result
        if changed:
            scope["client"] = client
        if scheme is not None:
            scheme = scheme.lower()
            if scheme in SCHEMES:
                scheme = SCHEMES[scheme]
                if scope["type"] == "websocket":
                    scheme = WS_SCHEMES[scheme]
                scope["scheme"] = scheme
        if host is not None or port is not None:
            _set_host(scope, headers, host, port)

    # -- the two header kinds -----------------------------------------------------------------

    def _from_x_forwarded(self, values: dict[bytes, list[str]]) -> _Result:
        chain = _split(values.get(X_FOR, ()))
        hops = 1  # the peer itself
        client: tuple[str, int] | None = None
        changed = bool(chain)
        for index in range(len(chain) - 1, -1, -1):
            node = _parse_node(chain[index])
            if node is not None and self.peers.trusts(node[0]) and index:
                hops += 1
                continue
            client = node
            break

        def pick(name: bytes) -> str | None:
            items = _split(values.get(name, ()))
            return items[-min(hops, len(items))] if items else None

        return client, changed, pick(X_PROTO), pick(X_HOST), pick(X_PORT)

    def _from_forwarded(self, text: str) -> _Result:
        elements = parse_forwarded(text)
        if not elements:
            return None
        chosen = elements[0]
        for index in range(len(elements) - 1, -1, -1):
            node_text = elements[index].get("for")
            node = None if node_text is None else _parse_node(node_text)
            if node is not None and self.peers.trusts(node[0]) and index:
                continue
            chosen = elements[index]
            break
        node_text = chosen.get("for")
        client = None if node_text is None else _parse_node(node_text)
        return client, node_text is not None, chosen.get("proto"), chosen.get("host"), None


def _split(values: Iterable[str]) -> list[str]:
    """Comma-separated list values of one or more header lines, in order."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _parse_node(text: str) -> tuple[str, int] | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``
    (RFC 7239 section 6), as ``(ip, port)`` with port 0 if absent; None if not an IP."""
    text = text.strip()
    port = "0"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] or "0"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not port.isdigit() or int(port) > 65535:
        return None
    return str(address), int(port)


def parse_forwarded(text: str) -> list[dict[str, str]]:
    """RFC 7239 section 4: elements separated by commas, pairs by semicolons, values
    tokens or quoted strings. Returns [] if the header is malformed (believe nothing)."""
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in ",;":
            if text[i] == ",":
                elements.append(current)
                current = {}
            i += 1
            continue
        eq = text.find("=", i)
        if eq < 0:
            return []
        key = text[i:eq].strip().lower()
        i = eq + 1
        if i < n and text[i] == '"':
            chars = []
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= n:
                return []  # unterminated quoted string
            i += 1
            value = "".join(chars)
        else:
            end = i
            while end < n and text[end] not in ",;":
                end += 1
            value = text[i:end].strip()
            i = end
        if not key or key in current:
            return []  # RFC 7239 section 4: a parameter must not occur twice in an element
        current[key] = value
    elements.append(current)
    return [element for element in elements if element]


def _set_host(
    scope: dict[str, Any], headers: list[tuple[bytes, bytes]], host: str | None, port: str | None
) -> None:
    """Replace the Host header's value (its host, its port, or both), in place."""
    current = next((value.decode("latin-1") for name, value in headers if name == b"host"), "")
    new = host if host is not None and _HOST.fullmatch(host) else current
    if port is not None and port.isdigit() and 0 < int(port) <= 65535 and new:
        new = f"{_strip_port(new)}:{int(port)}"
    if not new or new == current:
        return
    value = new.encode("latin-1")
    if current:
        scope["headers"] = [(name, value) if name == b"host" else (name, v) for name, v in headers]
    else:
        scope["headers"] = [*headers, (b"host", value)]


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    return host.partition(":")[0]
