"""Throwaway certificates for the TLS tests (trustme), written to a temporary directory."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class Certs:
    ca: trustme.CA
    ca_file: Path
    #: The server's certificate and key (for localhost and 127.0.0.1), in separate files.
    cert_file: Path
    key_file: Path
    #: The first certificate of cert_file, PEM.
    cert_pem: str
    client: trustme.LeafCert

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if with_cert:
            self.client.configure_cert(context)
        return context


def make_certs(directory: Path, name: str = "server") -> Certs:
    """A CA, a server certificate (RSA, so TLS 1.2 suites are predictable) and a client one."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = ca.issue_cert("localhost", "127.0.0.1", "::1", key_type=trustme.KeyType.RSA)
    client = ca.issue_cert(
        "client@example.org",
        common_name="alice, admin",
        organization_name="Example",
        organization_unit_name="Ops",
    )
    ca_file = directory / f"{name}-ca.pem"
    cert_file = directory / f"{name}.pem"
    key_file = directory / f"{name}.key"
    ca.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert_file))
    server.private_key_pem.write_to_path(str(key_file))
    return Certs(
        ca=ca,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        cert_pem=server.cert_chain_pems[0].bytes().decode(),
        client=client,
    )


def encrypt_key(key_file: Path, password: str) -> Path:
    """Write an encrypted copy of a PEM private key beside it; return its path."""
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )
    target = key_file.with_name(key_file.stem + "-encrypted.key")
    target.write_bytes(data)
    return target
