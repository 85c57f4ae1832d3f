"""TLS (corral.workers.tls): building the context and the ASGI tls extension, in memory.

The handshakes here run between two ``ssl.SSLObject`` over memory BIOs: real OpenSSL,
no sockets, no event loop.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from corral.config import Config, ConfigError, load_config
from corral.workers.tls import ServerTLS, escape_rfc4514, load_server_tls
from tests.certs import Certs, encrypt_key, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


def config(certs: Certs, **options: Any) -> Config:
    cli = {"app": "m:a", "ssl_certfile": str(certs.cert_file), "ssl_keyfile": str(certs.key_file)}
    cli.update(options)
    return load_config(cli, env={}).config


class FakeTransport:
    def __init__(self, ssl_object: ssl.SSLObject | None) -> None:
        self.ssl_object = ssl_object

    def get_extra_info(self, name: str) -> Any:
        return self.ssl_object if name == "ssl_object" else None


def handshake(server: ServerTLS, client: ssl.SSLContext) -> ssl.SSLObject:
    """Run a TLS handshake in memory; return the server's side."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server_side = server.context.wrap_bio(s_in, s_out, server_side=True)
    client_side = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3 sends the client's certificate verdict after the handshake.
            with pytest.raises(ssl.SSLWantReadError):
                server_side.read()
            return server_side
    raise AssertionError("handshake did not finish")


def test_no_certfile_no_tls():
    """Without --ssl-certfile there is no context and no extension."""
    assert load_server_tls(load_config({"app": "m:a"}, env={}).config) is None


def test_extension_tls13(certs):
    """TLS 1.3: version 0x0304, an IANA TLS 1.3 suite, the server cert, no client cert."""
    tls = load_server_tls(config(certs))
    assert tls is not None
    ext = tls.extension(FakeTransport(handshake(tls, certs.client_context())))
    assert ext == {
        "tls_version": 0x0304,
        "cipher_suite": ext["cipher_suite"],
        "server_cert": certs.cert_pem,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
    }
    # RFC 8446 appendix B.4: TLS_AES_128_GCM_SHA256 .. TLS_AES_128_CCM_8_SHA256.
    assert ext["cipher_suite"] in range(0x1301, 0x1306)


def test_extension_tls12_cipher_number(certs):
    """TLS 1.2: version 0x0303 and the suite's IANA number (RFC 5289: 0xC02F)."""
    tls = load_server_tls(config(certs))
    assert tls is not None
    client = certs.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    ext = tls.extension(FakeTransport(handshake(tls, client)))
    assert (ext["tls_version"], ext["cipher_suite"]) == (0x0303, 0xC02F)


def test_extension_client_certificate(certs):
    """mTLS: the client's PEM first in the chain and its subject in RFC 4514 form."""
    tls = load_server_tls(config(certs, ssl_ca_certs=str(certs.ca_file), ssl_cert_reqs="required"))
    assert tls is not None
    ext = tls.extension(FakeTransport(handshake(tls, certs.client_context(with_cert=True))))
    leaf = certs.client.cert_chain_pems[0].bytes().decode()
    assert ssl.PEM_cert_to_DER_cert(ext["client_cert_chain"][0]) == ssl.PEM_cert_to_DER_cert(leaf)
    assert ext["client_cert_name"] == r"CN=alice\, admin,OU=Ops,O=Example"
    assert ext["client_cert_error"] is None


def test_required_client_certificate_missing(certs):
    """--ssl-cert-reqs required: a client without a certificate fails the handshake."""
    tls = load_server_tls(config(certs, ssl_ca_certs=str(certs.ca_file), ssl_cert_reqs="required"))
    assert tls is not None
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|PEER_DID_NOT_RETURN"):
        handshake(tls, certs.client_context())


def test_plain_transport_has_no_extension(certs):
    """A transport without an SSL object gets no extension."""
    tls = load_server_tls(config(certs))
    assert tls is not None
    assert tls.extension(FakeTransport(None)) is None


def test_encrypted_key(certs):
    """An encrypted key needs its password; without it the error says so (no prompt)."""
    encrypted = encrypt_key(certs.key_file, "s3cret")
    assert load_server_tls(config(certs, ssl_keyfile=str(encrypted), ssl_keyfile_password="s3cret"))
    with pytest.raises(ConfigError, match="the key is encrypted: it needs --ssl-keyfile-password"):
        load_server_tls(config(certs, ssl_keyfile=str(encrypted)))
    with pytest.raises(ConfigError, match=r"cannot load .*\(check --ssl-keyfile-password\)$"):
        load_server_tls(config(certs, ssl_keyfile=str(encrypted), ssl_keyfile_password="no"))


def test_encrypted_key_inside_the_certfile(certs, tmp_path: Path):
    """A certfile that also holds the (encrypted) key gets the password hint too."""
    both = tmp_path / "both.pem"
    encrypted = encrypt_key(certs.key_file, "s3cret")
    both.write_bytes(certs.cert_file.read_bytes() + encrypted.read_bytes())
    with pytest.raises(ConfigError, match="needs --ssl-keyfile-password"):
        load_server_tls(config(certs, ssl_certfile=str(both), ssl_keyfile=None))


@pytest.mark.parametrize("option", ["ssl_certfile", "ssl_keyfile", "ssl_ca_certs"])
def test_missing_file_is_named_without_a_password_hint(certs, tmp_path: Path, option):
    """A missing file is named with its option; no word of passwords (the key is not encrypted)."""
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as info:
        load_server_tls(config(certs, **{option: str(missing)}))
    flag = "--" + option.replace("_", "-")
    assert str(info.value) == f"cannot read {flag} {missing}: No such file or directory"


def test_missing_certfile_with_an_encrypted_key(certs, tmp_path: Path):
    """The missing file is the error even when the key is encrypted and has no password."""
    encrypted = encrypt_key(certs.key_file, "s3cret")
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as info:
        load_server_tls(config(certs, ssl_certfile=str(missing), ssl_keyfile=str(encrypted)))
    assert str(info.value) == f"cannot read --ssl-certfile {missing}: No such file or directory"


def test_mismatched_key(certs, tmp_path: Path):
    """A key of another certificate is a one-line ConfigError, with no password hint."""
    other = make_certs(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"KEY_VALUES_MISMATCH|key values mismatch") as info:
        load_server_tls(config(certs, ssl_keyfile=str(other.key_file)))
    assert "password" not in str(info.value)


def test_bad_cipher_list(certs):
    """A cipher list that selects nothing is refused."""
    with pytest.raises(ConfigError, match="selects no cipher"):
        load_server_tls(config(certs, ssl_ciphers="NOT-A-CIPHER"))


def test_config_checks():
    """TLS options without a certificate, or client checks without CAs, are usage errors."""
    with pytest.raises(ConfigError, match=r"ssl_keyfile .*needs --ssl-certfile"):
        load_config({"app": "m:a", "ssl_keyfile": "k.pem"}, env={})
    with pytest.raises(ConfigError, match="'required' needs --ssl-ca-certs"):
        load_config({"app": "m:a", "ssl_certfile": "c", "ssl_cert_reqs": "required"}, env={})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ('a,b+c;d<e>f"g\\h', r"a\,b\+c\;d\<e\>f\"g\\h"),
        ("#lead", r"\#lead"),
        (" both ", r"\ both\ "),
        ("mid#dle", "mid#dle"),
        ("nul\0", r"nul\00"),
    ],
)
def test_escape_rfc4514(value, expected):
    """RFC 4514 section 2.4 escapes."""
    assert escape_rfc4514(value) == expected
