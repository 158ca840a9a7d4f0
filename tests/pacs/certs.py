"""Certificates for the DICOM TLS tests, made here with the `cryptography` package: a CA, a second CA nobody
configured, and leaf certificates signed by them (good, expired, for another host, for a client).

Keys are EC P-256 (fast to make, accepted by OpenSSL's default security level and by DCMTK's BCP 195 profile).
Files are written 0600 into the directory given; :class:`Pki` names them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NOW = dt.datetime.now(dt.timezone.utc)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "MIFAS test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


class _Authority:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = _key()
        subject = _name(f"{name} CA")
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - dt.timedelta(days=1)).not_valid_after(_NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = _write(directory / f"{name}-ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, *, dns: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",),
              days: tuple[int, int] = (-1, 30)) -> Issued:
        """A leaf for both server and client use, valid from now+days[0] to now+days[1] (days)."""
        key = _key()
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (
            x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_NOW + dt.timedelta(days=days[0])).not_valid_after(_NOW + dt.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert=_write(self.directory / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM)),
            key=_write(self.directory / f"{stem}.key", key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        )


@dataclass(frozen=True)
class Pki:
    """Everything a TLS test needs; `ca` is the CA the viewer is configured with."""

    ca: Path
    other_ca: Path
    server: Issued  # for 127.0.0.1 and localhost, by `ca`
    client: Issued  # this workstation, by `ca`
    expired: Issued  # for 127.0.0.1, by `ca`, expired yesterday
    wrong_host: Issued  # for pacs.example.org only, by `ca`
    stranger: Issued  # for 127.0.0.1, by a CA nobody configured
    stranger_client: Issued  # a client certificate by that CA


def make_pki(directory: Path, server_ips: tuple[str, ...] = ("127.0.0.1",)) -> Pki:
    """`server_ips`: the addresses the good server certificate is valid for (a cluster's VIP and members)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = _Authority(directory, "site"), _Authority(directory, "other")
    return Pki(
        ca=ca.pem, other_ca=other.pem,
        server=ca.issue("server", ips=server_ips),
        client=ca.issue("client", dns=("workstation.example.org",), ips=("127.0.0.1",)),
        expired=ca.issue("expired", days=(-30, -1)),
        wrong_host=ca.issue("wrong-host", dns=("pacs.example.org",), ips=()),
        stranger=other.issue("stranger"),
        stranger_client=other.issue("stranger-client"),
    )
