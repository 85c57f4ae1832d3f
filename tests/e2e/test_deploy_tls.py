"""TLS end to end: https and wss, the ASGI tls extension, mutual TLS, certificates
re-read on HUP, and bad TLS files as usage errors."""

from __future__ import annotations

import json
import shutil
import signal
import ssl

import pytest
from websockets.sync.client import connect as ws_connect

from tests.certs import Certs, encrypt_key, make_certs
from tests.e2e.test_startup import run_to_exit
from tests.harness import TIME_FACTOR, Server, read_response


@pytest.fixture
def certs(tmp_path) -> Certs:
    return make_certs(tmp_path / "certs")


def tls_args(certs: Certs) -> tuple[str, ...]:
    return ("--ssl-certfile", str(certs.cert_file), "--ssl-keyfile", str(certs.key_file))


def get_tls(srv: Server, context: ssl.SSLContext) -> tuple[int, dict[str, object], ssl.SSLSocket]:
    """GET / over TLS; returns the status, the JSON body and the (open) TLS socket."""
    sock = context.wrap_socket(srv.connect(), server_hostname="localhost")
    sock.sendall(b"GET /p HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, body = read_response(sock)
    return status, json.loads(body), sock


def test_https_scope_and_tls_extension(certs):
    """https scheme and the full tls extension; the key's password comes from the env."""
    key = encrypt_key(certs.key_file, "pa55")
    args = ("--ssl-certfile", str(certs.cert_file), "--ssl-keyfile", str(key))
    env = {"CORRAL_SSL_KEYFILE_PASSWORD": "pa55"}
    with Server("tests.apps:scope_dump", *args, env=env) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        status, scope, sock = get_tls(srv, certs.client_context())
        sock.close()
    assert status == 200
    assert scope["scheme"] == "https"
    tls = scope["extensions"]["tls"]
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in range(0x1301, 0x1306)
    assert tls["server_cert"] == certs.cert_pem
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None


def test_plain_connection_has_no_tls_extension():
    """Without TLS the scope has no tls extension at all (the spec's rule)."""
    with Server("tests.apps:scope_dump") as srv, srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        scope = json.loads(read_response(sock)[2])
    assert scope["scheme"] == "http"
    assert "tls" not in scope.get("extensions", {})


def test_mutual_tls(certs):
    """--ssl-cert-reqs required: the client's certificate reaches the app; none fails."""
    args = (*tls_args(certs), "--ssl-ca-certs", str(certs.ca_file), "--ssl-cert-reqs", "required")
    with Server("tests.apps:scope_dump", *args) as srv:
        status, scope, sock = get_tls(srv, certs.client_context(with_cert=True))
        sock.close()
        assert status == 200
        tls = scope["extensions"]["tls"]
        assert tls["client_cert_name"] == r"CN=alice\, admin,OU=Ops,O=Example"
        leaf = certs.client.cert_chain_pems[0].bytes().decode()
        assert ssl.PEM_cert_to_DER_cert(tls["client_cert_chain"][0]) == (
            ssl.PEM_cert_to_DER_cert(leaf)
        )
        # Without a certificate: TLS 1.3 reports the refusal at the first read, as an
        # alert or as the connection closing.
        with certs.client_context().wrap_socket(srv.connect(), server_hostname="localhost") as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                data = sock.recv(4096)
            except (ssl.SSLError, ConnectionResetError):
                data = b""
            assert data == b""


def test_wss_scope(certs):
    """A WebSocket over TLS has scheme wss and both extensions (tls, http.response)."""
    with Server("tests.apps_deploy:ws_scope", *tls_args(certs)) as srv:
        uri = f"wss://localhost:{srv.port}/ws"
        with ws_connect(uri, ssl=certs.client_context(), open_timeout=10 * TIME_FACTOR) as ws:
            data = json.loads(ws.recv(timeout=10 * TIME_FACTOR))
    assert data["scheme"] == "wss"
    assert data["extensions"]["tls"]["server_cert"] == certs.cert_pem
    assert "websocket.http.response" in data["extensions"]


def test_hup_rereads_certificates(certs, tmp_path):
    """HUP: the new workers read the files again and serve the renewed certificate."""
    with Server("tests.apps:scope_dump", *tls_args(certs)) as srv:
        renewed = make_certs(tmp_path / "renewed")
        shutil.copy(renewed.cert_file, certs.cert_file)
        shutil.copy(renewed.key_file, certs.key_file)
        mark = len(srv.lines)
        srv.signal(signal.SIGHUP)
        srv.wait_for_line(r"generation 2 READY", start=mark)
        # Until the retired worker has closed its listeners it may still accept.
        srv.wait_for_line(r"generation 1\) exited", start=mark)
        # Connections now get the renewed certificate, issued by another CA.
        status, scope, sock = get_tls(srv, renewed.client_context())
        sock.close()
        assert status == 200
        assert scope["extensions"]["tls"]["server_cert"] == renewed.cert_pem
        with pytest.raises(ssl.SSLCertVerificationError), srv.connect() as raw:
            certs.client_context().wrap_socket(raw, server_hostname="localhost")


def test_hup_with_broken_certificate_keeps_serving(certs):
    """HUP with a broken key file: the reload is abandoned, the old workers serve on."""
    with Server("tests.apps:scope_dump", *tls_args(certs)) as srv:
        certs.key_file.write_text("not a key\n")
        mark = len(srv.lines)
        srv.signal(signal.SIGHUP)
        srv.wait_for_line(r"reload abandoned", start=mark)
        status, _, sock = get_tls(srv, certs.client_context())
        sock.close()
        assert status == 200


def test_bad_tls_files_exit_2(certs, tmp_path):
    """A key that does not match the certificate: one line, exit code 2, nothing bound."""
    other = make_certs(tmp_path / "other")
    proc = run_to_exit(
        "tests.apps:hello",
        "--port",
        "0",
        "--ssl-certfile",
        str(certs.cert_file),
        "--ssl-keyfile",
        str(other.key_file),
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot load --ssl-certfile/--ssl-keyfile" in proc.stderr
    assert "listening on" not in proc.stderr


def test_missing_certfile_is_named_exit_2(certs, tmp_path):
    """A missing --ssl-certfile: one line naming it, no password hint, exit code 2."""
    missing = tmp_path / "nope.pem"
    proc = run_to_exit(
        "tests.apps:hello",
        "--port",
        "0",
        "--ssl-certfile",
        str(missing),
        "--ssl-keyfile",
        str(certs.key_file),
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "cannot" in line]
    assert len(errors) == 1, proc.stderr
    assert errors[0].endswith(f"cannot read --ssl-certfile {missing}: No such file or directory")
    assert "password" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "listening on" not in proc.stderr


def test_encrypted_key_without_password_exit_2(certs):
    """An encrypted key and no --ssl-keyfile-password: the error says the password is missing."""
    encrypted = encrypt_key(certs.key_file, "s3cret")
    proc = run_to_exit(
        "tests.apps:hello",
        "--port",
        "0",
        "--ssl-certfile",
        str(certs.cert_file),
        "--ssl-keyfile",
        str(encrypted),
    )
    assert proc.returncode == 2, proc.stderr
    assert "the key is encrypted: it needs --ssl-keyfile-password" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plain_http_to_tls_port_is_closed(certs):
    """A plain HTTP request on the TLS port is closed without an answer, at once."""
    with Server("tests.apps:hello", *tls_args(certs)) as srv, srv.connect() as sock:
        sock.settimeout(5 * TIME_FACTOR)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b""  # the failed handshake closes the connection at once
