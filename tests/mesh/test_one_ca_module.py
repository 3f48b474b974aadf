"""isthmus.pki, the one CA module: the mesh's RSA root and intermediates, and the lab's EC cluster CA."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from isthmus.pki import Authority, KeyType, subject


def test_a_mesh_root_signs_an_intermediate_that_signs_nothing_below_it_but_leaves() -> None:
    root = Authority.new("Istio root CA", org="isthmus", key_type=KeyType.RSA_2048)
    again = Authority.from_pem(root.cert_pem(), root.key_pem())  # as `mesh render` reads it back from --ca-dir
    mid = Authority.new("Istio intermediate CA c1", org="isthmus", key_type=KeyType.RSA_2048, days=1825,
                        signer=again)
    assert root.key_pem().startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1: what sprig and Istio read
    mid.cert.verify_directly_issued_by(root.cert)
    assert mid.cert.issuer == root.cert.subject
    assert mid.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "isthmus"
    root_bc = root.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    mid_bc = mid.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (root_bc.ca, root_bc.path_length, mid_bc.ca, mid_bc.path_length) == (True, None, True, 0)
    days = (mid.cert.not_valid_after_utc - mid.cert.not_valid_before_utc).days
    assert days == 1825  # five minutes of skew allowance before "now", so the span is 1825 days and 5 minutes


def test_a_lab_ca_issues_ec_leaves_with_their_usage_and_names() -> None:
    ca = Authority.new("isthmus-lab-c1-ca")
    assert ca.key_pem().startswith(b"-----BEGIN PRIVATE KEY-----")  # EC, PKCS#8
    issued = ca.issue_pem(subject("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH,
                          [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))])
    leaf = x509.load_pem_x509_certificate(issued.cert_pem)
    leaf.verify_directly_issued_by(ca.cert)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert subject("admin", "system:masters").rfc4514_string() == "CN=admin,O=system:masters"
