"""Certificate authorities and the certificates they issue, in memory, as PEM (``cryptography``).

The one CA module. Both users make their authorities here:

- the lab's per-cluster PKI (:mod:`isthmus.lab.pki`): an EC P-256 CA that issues the API
  server's, kwok's and the components' certificates, written as files;
- the mesh's CAs (``isthmus mesh render``, :mod:`isthmus.cli._network`): the Cilium ClusterMesh CA
  and Istio's root with one intermediate per cluster, RSA 2048 with PKCS#1 keys, which is what
  Helm's sprig (Cilium's chart) and Istio's plug-in CA read.

Every CA certificate is marked a CA (an intermediate with path length 0), may sign certificates
and CRLs, and carries its subject key identifier; it is valid from five minutes ago (clock skew)
for ``days``. Owns: making keys and certificates. Must not: write files or talk to anything
(callers keep the PEM where they keep it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["DEFAULT_DAYS", "Authority", "Issued", "KeyType", "PrivateKey", "subject"]

DEFAULT_DAYS = 3650
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class KeyType(StrEnum):
    EC_P256 = "ec-p256"
    """Fast to make; the lab's choice. Its PEM is PKCS#8."""
    RSA_2048 = "rsa-2048"
    """What every consumer reads; the mesh's choice. Its PEM is PKCS#1 ("RSA PRIVATE KEY")."""


def _new_key(kind: KeyType) -> PrivateKey:
    if kind is KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if isinstance(key, rsa.RSAPrivateKey) \
        else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def subject(cn: str, org: str | None = None) -> x509.Name:
    """A certificate subject: ``O=org,CN=cn`` (Kubernetes reads the organisation as a group)."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(name: x509.Name, issuer: x509.Name, key: PrivateKey, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         encipher_only=False, decipher_only=False)


@dataclass(frozen=True)
class Issued:
    """A leaf certificate and its fresh private key, as PEM."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Authority:
    """A certificate authority in memory: its name, key and certificate."""

    name: x509.Name
    key: PrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, cn: str, *, org: str | None = None, key_type: KeyType = KeyType.EC_P256, days: int = DEFAULT_DAYS,
            signer: Authority | None = None) -> Self:
        """A self-signed root, or with ``signer`` an intermediate (path length 0) that ``signer`` signed."""
        key, name = _new_key(key_type), subject(cn, org)
        issuer = signer.name if signer is not None else name
        cert = (
            _builder(name, issuer, key, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None if signer is None else 0), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(signer.key if signer is not None else key, hashes.SHA256())
        )
        return cls(name, key, cert)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> Self:
        """An authority made earlier (its files read back); ValueError when they are not a certificate and key."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"unsupported CA key type {type(key).__name__}")
        return cls(cert.subject, key, cert)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def issue_pem(self, to: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None = None,
                  *, days: int = DEFAULT_DAYS) -> Issued:
        """A fresh EC key and a certificate for ``to``, for one extended ``usage`` (server or client auth)."""
        key = _new_key(KeyType.EC_P256)
        b = (
            _builder(to, self.name, key, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return Issued(b.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), _key_pem(key))
