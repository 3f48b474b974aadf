"""Certificates and keys for one lab cluster (EC P-256, fast), made by :mod:`isthmus.pki`.

Owns: the file layout of the cluster CA, the API server's serving certificate, the
service-account signing key pair and client certificates (admin in ``system:masters``,
controller-manager, scheduler, kwok), written as PEM files into one directory. Must not: start
processes or talk to servers, or make certificates any other way than :mod:`isthmus.pki` does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..pki import Authority as _Authority
from ..pki import subject

__all__ = ["CLIENTS", "ClusterPKI", "Credential", "PemAuthority", "make_cluster_pki", "subject"]

#: client name -> (common name, organisation or None)
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("lab-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
    # The API server's identity towards the kubelet API (kwok's server): exec, logs, port-forward.
    "apiserver-kubelet": ("kube-apiserver-kubelet-client", "system:masters"),
    # The lab's pod runtime (one per cluster): pod status, volumes, kwok's Exec/Logs/PortForward objects.
    "runtime": ("isthmus-lab-runtime", "system:masters"),
}


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    """Where one cluster's PKI files are."""

    dir: Path
    ca: Credential
    apiserver: Credential
    #: kwok's serving certificate for the kubelet API (the nodes' InternalIP is 127.0.0.1)
    kubelet: Credential
    sa_private_key: Path
    sa_public_key: Path
    clients: dict[str, Credential]

    @classmethod
    def at(cls, directory: Path) -> ClusterPKI:
        """The file layout under ``directory`` (whether or not the files exist yet)."""
        def cred(name: str) -> Credential:
            return Credential(directory / f"{name}.crt", directory / f"{name}.key")

        return cls(
            dir=directory,
            ca=cred("ca"),
            apiserver=cred("apiserver"),
            kubelet=cred("kubelet"),
            sa_private_key=directory / "sa.key",
            sa_public_key=directory / "sa.pub",
            clients={name: cred(f"client-{name}") for name in CLIENTS},
        )

    def complete(self) -> bool:
        files = [self.ca.cert, self.ca.key, self.apiserver.cert, self.apiserver.key, self.kubelet.cert,
                 self.kubelet.key, self.sa_private_key,
                 self.sa_public_key, *(p for c in self.clients.values() for p in (c.cert, c.key))]
        return all(f.is_file() for f in files)


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


@dataclass(frozen=True)
class PemAuthority(_Authority):
    """A certificate authority (:class:`isthmus.pki.Authority`) that writes what it makes as PEM files."""

    def write(self, cred: Credential) -> None:
        _write(cred.cert, self.cert_pem())
        _write(cred.key, self.key_pem(), private=True)

    def issue(self, cred: Credential, to: x509.Name, usage: x509.ObjectIdentifier,
              sans: list[x509.GeneralName] | None = None) -> None:
        """Write a fresh key and a certificate for ``to`` (server or client ``usage``) to ``cred``'s files."""
        issued = self.issue_pem(to, usage, sans)
        _write(cred.cert, issued.cert_pem)
        _write(cred.key, issued.key_pem, private=True)


def make_cluster_pki(directory: Path, *, cluster: str, service_ip: ipaddress.IPv4Address) -> ClusterPKI:
    """Write a fresh PKI for ``cluster`` into ``directory``; the API server cert covers
    ``127.0.0.1``, ``localhost``, ``kubernetes.default.svc`` (and friends) and ``service_ip``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = ClusterPKI.at(directory)
    ca = PemAuthority.new(f"isthmus-lab-{cluster}-ca")
    ca.write(pki.ca)

    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    ips = [ipaddress.IPv4Address("127.0.0.1"), service_ip]
    ca.issue(pki.apiserver, subject("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH,
             [*(x509.DNSName(d) for d in dns), *(x509.IPAddress(i) for i in ips)])
    ca.issue(pki.kubelet, subject("kwok-kubelet"), ExtendedKeyUsageOID.SERVER_AUTH,
             [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))])
    for name, (cn, org) in CLIENTS.items():
        ca.issue(pki.clients[name], subject(cn, org), ExtendedKeyUsageOID.CLIENT_AUTH)

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write(pki.sa_private_key, sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()), private=True)
    _write(pki.sa_public_key, sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki
