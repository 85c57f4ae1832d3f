"""Forwarding headers (corral.workers.proxy): trust, the rightmost-untrusted client, B24."""

from __future__ import annotations

from typing import Any

import pytest

from corral.config import ConfigError, load_config
from corral.workers.proxy import ProxyHeaders, TrustedPeers, parse_forwarded

PEER = ("127.0.0.1", 50000)


def scope(*headers: tuple[str, str], kind: str = "http") -> dict[str, Any]:
    return {
        "type": kind,
        "scheme": "http" if kind == "http" else "ws",
        "client": PEER,
        "server": ("127.0.0.1", 8000),
        "root_path": "",
        "headers": [(b"host", b"internal:8000")] + [(n.encode(), v.encode()) for n, v in headers],
    }


def applied(
    allow: list[str],
    *headers: tuple[str, str],
    peer: tuple[str, int] | None = PEER,
    unix: bool = False,
    kind: str = "x-forwarded",
    scope_type: str = "http",
) -> dict[str, Any]:
    proxy = ProxyHeaders(allow, kind)
    result = scope(*headers, kind=scope_type)
    result["client"] = peer
    proxy.apply(result, proxy.trusts(peer, unix=unix))
    return result


def header(result: dict[str, Any], name: str) -> list[str]:
    return [v.decode() for n, v in result["headers"] if n == name.encode()]


# -- B24 ---------------------------------------------------------------------------------------


def test_b24_trusted_proxy_client_is_rightmost_untrusted():
    """B24: from a trusted proxy, XFF "1.2.3.4, 9.9.9.9" makes 9.9.9.9 the client."""
    result = applied(["127.0.0.1"], ("x-forwarded-for", "1.2.3.4, 9.9.9.9"))
    assert result["client"] == ("9.9.9.9", 0)


def test_b24_untrusted_peer_headers_ignored_and_stripped():
    """B24: from an untrusted peer the headers change nothing and the app never sees them."""
    result = applied(
        ["10.0.0.1"],
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=1.2.3.4;proto=https"),
        ("x-other", "kept"),
    )
    assert result["client"] == PEER
    assert result["scheme"] == "http"
    assert header(result, "host") == ["internal:8000"]
    names = [n for n, _ in result["headers"]]
    assert names == [b"host", b"x-other"]


def test_b24_two_xff_headers_joined_in_order():
    """B24: two X-Forwarded-For lines are one list, first line first."""
    allow = ["127.0.0.1", "10.0.0.0/8"]
    result = applied(
        allow, ("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8, 10.0.0.2")
    )
    assert result["client"] == ("5.6.7.8", 0)
    swapped = applied(
        allow, ("x-forwarded-for", "5.6.7.8, 10.0.0.2"), ("x-forwarded-for", "1.2.3.4")
    )
    assert swapped["client"] == ("1.2.3.4", 0)


@pytest.mark.parametrize(
    ("allow", "trusted"),
    [(["unix"], True), (["*"], True), (["127.0.0.1", "::1"], False)],
)
def test_b24_unix_socket_peers(allow, trusted):
    """Unix-socket peers are trusted through 'unix' or '*', never through an IP entry."""
    result = applied(allow, ("x-forwarded-for", "1.2.3.4"), peer=None, unix=True)
    assert result["client"] == (("1.2.3.4", 0) if trusted else None)


# -- the chain --------------------------------------------------------------------------------


def test_every_address_trusted_leftmost_is_client():
    """If the whole chain is trusted, the leftmost address is the client."""
    result = applied(["127.0.0.1", "10.0.0.0/8"], ("x-forwarded-for", "10.1.1.1, 10.2.2.2"))
    assert result["client"] == ("10.1.1.1", 0)


def test_cidr_and_ipv6_entries():
    """CIDR networks and IPv6 entries (bare or bracketed with a port) are understood."""
    allow = ["127.0.0.0/8", "2001:db8::/32"]
    result = applied(allow, ("x-forwarded-for", "2001:4860::1, [2001:db8::5]:443"))
    assert result["client"] == ("2001:4860::1", 0)
    with_port = applied(allow, ("x-forwarded-for", "198.51.100.7:1234"))
    assert with_port["client"] == ("198.51.100.7", 1234)


def test_not_an_address_makes_client_unknown():
    """'unknown' or garbage as the client is None, never a string the app might trust."""
    assert applied(["127.0.0.1"], ("x-forwarded-for", "unknown"))["client"] is None
    assert applied(["127.0.0.1"], ("x-forwarded-for", "1.2.3.4, <script>"))["client"] is None


def test_ipv4_mapped_peer_matches_ipv4_entry():
    """A dual-stack socket's ::ffff:127.0.0.1 is 127.0.0.1 for trust."""
    result = applied(["127.0.0.1"], ("x-forwarded-for", "1.2.3.4"), peer=("::ffff:127.0.0.1", 1))
    assert result["client"] == ("1.2.3.4", 0)


def test_trusted_peer_without_for_keeps_client():
    """A proxy that sets only X-Forwarded-Proto leaves the client as the peer."""
    result = applied(["127.0.0.1"], ("x-forwarded-proto", "https"))
    assert result["client"] == PEER
    assert result["scheme"] == "https"


# -- scheme, host, port ------------------------------------------------------------------------


def test_proto_host_port():
    """Proto sets the scheme, Host replaces the Host header, Port its port."""
    result = applied(
        ["127.0.0.1"],
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "HTTPS"),
        ("x-forwarded-host", "shop.example"),
        ("x-forwarded-port", "8443"),
    )
    assert result["scheme"] == "https"
    assert header(result, "host") == ["shop.example:8443"]
    assert result["headers"][0][0] == b"host"  # replaced in place, order kept
    assert result["server"] == ("127.0.0.1", 8000)  # the listening address is not forwarded
    assert result["root_path"] == ""


def test_proto_of_outermost_trusted_proxy():
    """With two trusted hops and appended lists, the outer proxy's proto is used."""
    result = applied(
        ["127.0.0.1", "10.0.0.0/8"],
        ("x-forwarded-for", "1.1.1.1, 10.0.0.5"),
        ("x-forwarded-proto", "https, http"),
    )
    assert (result["client"], result["scheme"]) == (("1.1.1.1", 0), "https")


def test_bad_values_are_ignored():
    """An unknown scheme, a host with spaces or a port out of range change nothing."""
    result = applied(
        ["127.0.0.1"],
        ("x-forwarded-proto", "gopher"),
        ("x-forwarded-host", "a b"),
        ("x-forwarded-port", "99999"),
    )
    assert result["scheme"] == "http"
    assert header(result, "host") == ["internal:8000"]


def test_websocket_scheme():
    """On a WebSocket scope, https becomes wss."""
    result = applied(["127.0.0.1"], ("x-forwarded-proto", "https"), scope_type="websocket")
    assert result["scheme"] == "wss"


def test_port_only_replaces_port_of_ipv6_host():
    """X-Forwarded-Port keeps a bracketed IPv6 host."""
    result = applied(
        ["127.0.0.1"], ("x-forwarded-host", "[2001:db8::1]:80"), ("x-forwarded-port", "443")
    )
    assert header(result, "host") == ["[2001:db8::1]:443"]


# -- RFC 7239 Forwarded ------------------------------------------------------------------------


def test_forwarded_element_of_first_untrusted():
    """Forwarded: the element of the rightmost untrusted for= gives proto and host."""
    result = applied(
        ["127.0.0.1", "10.0.0.0/8"],
        ("forwarded", 'for=192.0.2.60;proto=https;host="shop.example", for=10.0.0.5;proto=http'),
        kind="forwarded",
    )
    assert result["client"] == ("192.0.2.60", 0)
    assert result["scheme"] == "https"
    assert header(result, "host") == ["shop.example"]


def test_forwarded_quoted_ipv6_with_port():
    """for="[2001:db8:cafe::17]:4711" (RFC 7239 section 6) is an address and a port."""
    result = applied(
        ["127.0.0.1"], ("forwarded", 'For="[2001:db8:cafe::17]:4711"'), kind="forwarded"
    )
    assert result["client"] == ("2001:db8:cafe::17", 4711)


def test_forwarded_mode_strips_x_forwarded_and_vice_versa():
    """Only the configured kind is believed; the other is removed even from a trusted proxy."""
    both = (("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=7.7.7.7"))
    modern = applied(["127.0.0.1"], *both, kind="forwarded")
    assert modern["client"] == ("7.7.7.7", 0)
    assert header(modern, "x-forwarded-for") == []
    legacy = applied(["127.0.0.1"], *both)
    assert legacy["client"] == ("6.6.6.6", 0)
    assert header(legacy, "forwarded") == []


def test_forwarded_obfuscated_and_malformed():
    """An obfuscated node makes the client unknown; a malformed header changes nothing."""
    assert applied(["127.0.0.1"], ("forwarded", "for=_hidden"), kind="forwarded")["client"] is None
    result = applied(["127.0.0.1"], ("forwarded", 'for="1.2.3.4'), kind="forwarded")
    assert result["client"] == PEER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("for=1.2.3.4", [{"for": "1.2.3.4"}]),
        ('for="a,b;c";by=x, proto=https', [{"for": "a,b;c", "by": "x"}, {"proto": "https"}]),
        ("for=1;for=2", []),
        ("junk", []),
        ("", []),
    ],
)
def test_parse_forwarded(text, expected):
    """Quoted strings may hold separators; a repeated parameter makes the header invalid."""
    assert parse_forwarded(text) == expected


# -- configuration ------------------------------------------------------------------------------


def test_trusted_peers_parse():
    """Entries are IPs, CIDRs, 'unix' or '*'; anything else is refused."""
    peers = TrustedPeers(["10.0.0.0/8", "::1"])
    assert peers.trusts("10.9.8.7")
    assert peers.trusts("::1")
    assert not peers.trusts("11.0.0.1")
    assert not peers.trusts(None)
    assert not peers.trusts("not-an-ip")
    with pytest.raises(ValueError, match="does not appear to be"):
        TrustedPeers(["localhost"])


def test_config_rejects_bad_allow_entry():
    """--forwarded-allow-ips is checked at load time: one line, naming the entry."""
    with pytest.raises(ConfigError, match=r"'proxy\.example' is not an IP address"):
        load_config({"app": "m:a", "forwarded_allow_ips": ["proxy.example"]}, env={})


def test_config_env_alias():
    """FORWARDED_ALLOW_IPS (uvicorn, gunicorn) is read too."""
    loaded = load_config({"app": "m:a"}, env={"FORWARDED_ALLOW_IPS": "10.0.0.1, unix"})
    assert loaded.config.forwarded_allow_ips == ("10.0.0.1", "unix")
