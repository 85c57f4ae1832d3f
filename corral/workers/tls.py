"""TLS for the workers: the ``SSLContext`` and the ASGI ``tls`` scope extension.

Each worker builds its own context from the files named in the config, in
:func:`~corral.workers.worker.run_worker` before it switches to ``--user`` (so a key
readable by root only still works). A HUP starts new workers, which read the files
again: a renewed certificate is served without a restart, and a broken one fails the
new generation, which leaves the old workers serving (the reload is abandoned). The
master builds one context at start only to fail early, with exit code 2.

The ``tls`` extension (ASGI TLS spec, ``specs/tls.rst``) is computed once per
connection, in ``connection_made`` (asyncio calls it after the handshake), and shared
by the scopes of every request on that connection; plain connections have no
``tls`` key at all, as the spec requires. Its fields:

- ``tls_version``: the protocol's wire number (0x0304 for TLS 1.3);
- ``cipher_suite``: the IANA number of the cipher suite; Python only names the
  suite, so the number comes from the context's own cipher table (``get_ciphers()``,
  whose ids are OpenSSL's ``0x0300XXXX`` with the IANA number in the low 16 bits);
- ``server_cert``: the first certificate of ``--ssl-certfile``, PEM;
- ``client_cert_chain``: the PEM certificates the client sent, leaf first. Python
  3.13 gives the whole chain; older versions give the leaf only;
- ``client_cert_name``: the subject of a verified client certificate, RFC 4514;
- ``client_cert_error``: always None. OpenSSL fails the handshake when a certificate
  sent by the client does not verify (with ``optional`` as with ``required``), so an
  app never sees a connection with a failed certificate.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any, final

from corral.config import Config, ConfigError

#: ``SSLObject.version()`` -> the protocol number on the wire (RFC 8446 section 4.1.2,
#: RFC 5246 appendix A.1).
TLS_VERSIONS = {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303, "TLSv1.1": 0x0302, "TLSv1": 0x0301}

CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}

#: RFC 4514 section 3: the short names of the usual attributes. Others keep OpenSSL's
#: long name (``emailAddress``), as ``openssl x509 -nameopt RFC2253`` prints them.
RFC4514_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")


@final
class ServerTLS:
    """One worker's TLS context and the parts of the scope extension all connections share."""

    __slots__ = ("_cipher_ids", "context", "server_cert")

    def __init__(self, context: ssl.SSLContext, server_cert: str | None) -> None:
        self.context = context
        self.server_cert = server_cert
        self._cipher_ids = {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}

    def extension(self, transport: asyncio.BaseTransport) -> dict[str, Any] | None:
        """The ``tls`` extension for the connection on ``transport`` (None if not TLS).

        Call once per connection, after the handshake (in ``connection_made``).
        """
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        cipher = ssl_object.cipher()
        version = ssl_object.version()
        return {
            "tls_version": TLS_VERSIONS.get(version) if version else None,
            "cipher_suite": self._cipher_ids.get(cipher[0]) if cipher else None,
            "server_cert": self.server_cert,
            "client_cert_chain": client_chain(ssl_object),
            "client_cert_name": client_name(ssl_object),
            "client_cert_error": None,
        }


def load_server_tls(config: Config) -> ServerTLS | None:
    """Build the server context the config asks for (None without ``--ssl-certfile``).

    Reads the certificate, key and CA files now: call it where they should be read (in
    each new worker, and once in the master to fail early).

    Raises:
        ConfigError: a file cannot be read or parsed, the key does not match or cannot
            be decrypted, or the cipher list selects nothing.
    """
    certfile = config.ssl_certfile
    if certfile is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Python 3.10+ defaults to this already; stated so that no OpenSSL config lowers it.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    password = config.ssl_keyfile_password
    keyfile = config.ssl_keyfile
    # OpenSSL's error for a missing file names neither file: look at each first.
    _check_readable("--ssl-certfile", certfile)
    if keyfile is not None:
        _check_readable("--ssl-keyfile", keyfile)
    try:
        # A callable, never None: with None OpenSSL would prompt on the terminal for the
        # password of an encrypted key, and a service would hang there.
        context.load_cert_chain(certfile, keyfile, password=lambda: password or "")
    except (OSError, ssl.SSLError) as exc:
        hint = ""
        if _is_encrypted_key(keyfile or certfile):
            # OpenSSL says only "PEM lib" for a missing or wrong password.
            hint = " (check --ssl-keyfile-password)" if password else _NEEDS_PASSWORD
        raise ConfigError(
            f"cannot load --ssl-certfile/--ssl-keyfile: {_reason(exc)}{hint}"
        ) from None
    if config.ssl_ca_certs is not None:
        _check_readable("--ssl-ca-certs", config.ssl_ca_certs)
        try:
            context.load_verify_locations(cafile=config.ssl_ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --ssl-ca-certs: {_reason(exc)}") from None
    context.verify_mode = CERT_REQS[config.ssl_cert_reqs]
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(
                f"invalid value for ssl_ciphers: {config.ssl_ciphers!r} selects no cipher"
            ) from None
    return ServerTLS(context, _first_certificate(certfile))


_NEEDS_PASSWORD = " (the key is encrypted: it needs --ssl-keyfile-password)"

#: How PEM marks an encrypted private key: PKCS#8 (RFC 5958 section 3, with the label of
#: RFC 7468 section 11) and OpenSSL's traditional format (RFC 1421 ``Proc-Type``).
_ENCRYPTED_PEM_MARKERS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


def _check_readable(flag: str, path: str) -> None:
    """Open ``path`` once, so that a missing or unreadable file is named in the error.

    Raises:
        ConfigError: naming the option and the file.
    """
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def _is_encrypted_key(path: str) -> bool:
    """Whether the PEM file at ``path`` holds an encrypted private key."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return any(marker in data for marker in _ENCRYPTED_PEM_MARKERS)


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")


def _first_certificate(path: str) -> str | None:
    """The first PEM certificate in ``path`` (the server's own, before its chain)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            match = _PEM_CERT.search(f.read())
    except OSError:
        return None
    return match.group(0) + "\n" if match else None


def client_chain(ssl_object: ssl.SSLObject) -> list[str]:
    """The certificates the client sent, PEM, leaf first (empty if it sent none)."""
    unverified = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
    if unverified is not None:
        chain = unverified() or []
        return [ssl.DER_cert_to_PEM_cert(der) for der in chain]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [ssl.DER_cert_to_PEM_cert(leaf)] if leaf else []


def client_name(ssl_object: ssl.SSLObject) -> str | None:
    """The RFC 4514 subject of the client's verified certificate, or None."""
    cert = ssl_object.getpeercert()
    if not cert:
        return None  # no certificate, or not verified (CERT_NONE): nothing to vouch for
    subject = cert.get("subject", ())
    # RFC 4514 section 2.1: the RDNs in reverse order; the AVAs of one RDN joined by "+".
    return ",".join(
        "+".join(f"{RFC4514_NAMES.get(key, key)}={escape_rfc4514(value)}" for key, value in rdn)
        for rdn in reversed(subject)
    )


def escape_rfc4514(value: str) -> str:
    """Escape an attribute value as RFC 4514 section 2.4 requires."""
    out = []
    for index, char in enumerate(value):
        if char in '"+,;<>\\' or (char == "#" and index == 0):
            out.append("\\" + char)
        elif char == " " and (index == 0 or index == len(value) - 1):
            out.append("\\ ")
        elif char == "\0":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)
