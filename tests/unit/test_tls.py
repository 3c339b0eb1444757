"""Per-bottle CAs: what clients and mitmproxy need from them, and where the key goes."""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bottle.adapters.local.state_store import LocalStateStore
from bottle.adapters.tls import (
    ca_fingerprint,
    ca_valid_at,
    ensure_ca,
    issue_leaf,
    load_ca,
    mint_ca,
    read_ca,
    write_ca,
)
from bottle.core.state import ca_cert_path, ca_key_path

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ca():  # type: ignore[no-untyped-def]
    return mint_ca("bottle guard CA test-abcde", now=NOW)


def test_ca_is_a_strict_ca_valid_from_yesterday(ca) -> None:  # type: ignore[no-untyped-def]
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert cert.not_valid_before_utc == NOW - timedelta(days=1)
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert "bottle guard CA test-abcde" in cert.subject.rfc4514_string()


def test_repr_never_shows_the_key(ca) -> None:  # type: ignore[no-untyped-def]
    assert b"PRIVATE KEY" in ca.key_pem
    assert "PRIVATE" not in repr(ca) and ca.key_pem.decode()[40:80] not in repr(ca)


def test_mitmproxy_pem_is_key_then_certificate_and_loads_in_mitmproxy(ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pem = ca.mitmproxy_pem()
    assert pem.index(b"PRIVATE KEY") < pem.index(b"BEGIN CERTIFICATE")
    certs = pytest.importorskip("mitmproxy.certs")
    (tmp_path / "mitmproxy-ca.pem").write_bytes(pem)
    store = certs.CertStore.from_store(tmp_path, "mitmproxy", 2048)
    assert store.default_ca.fingerprint() == x509.load_pem_x509_certificate(ca.cert_pem).fingerprint(
        __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()
    )
    leaf = store.get_cert("api.example.test", [x509.DNSName("api.example.test")])
    assert leaf.cert.issuer == store.default_ca.subject


def test_a_leaf_signed_by_the_ca_verifies_with_python_ssl(ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A fresh CA whose validity covers "now", so the real clock can verify it.
    fresh = mint_ca("bottle test CA", now=datetime.now(timezone.utc))
    leaf = issue_leaf(fresh, ["api.example.test", "10.0.0.7"], now=datetime.now(timezone.utc))
    (tmp_path / "ca.crt").write_bytes(fresh.cert_pem)
    (tmp_path / "leaf.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.crt", tmp_path / "leaf.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    client.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cs = client.wrap_bio(c_in, c_out, server_hostname="api.example.test")
    ss = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for sock, inbox, outbox, peer_in in ((cs, c_in, c_out, s_in), (ss, s_in, s_out, c_in)):
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                pass
            data = outbox.read()
            if data:
                peer_in.write(data)
    assert cs.getpeercert()["subject"][0][0] == ("commonName", "api.example.test")


def test_load_ca_refuses_mismatched_or_non_ca_material(ca) -> None:  # type: ignore[no-untyped-def]
    other = mint_ca("other", now=NOW, key_type="ec")
    assert load_ca(ca.key_pem, ca.cert_pem) == ca
    with pytest.raises(ValueError, match="does not belong"):
        load_ca(other.key_pem, ca.cert_pem)
    leaf = issue_leaf(ca, ["x.example"], now=NOW)
    with pytest.raises(ValueError, match="not a CA"):
        load_ca(leaf.key_pem, leaf.cert_pem)
    with pytest.raises(ValueError) as err:
        load_ca(b"garbage", ca.cert_pem)
    assert "garbage" not in str(err.value)


def test_an_expired_ca_issues_nothing(ca) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="expired"):
        issue_leaf(ca, ["x.example"], now=NOW + timedelta(days=31))


def test_ec_keys_work_too() -> None:
    ca = mint_ca("ec", now=NOW, key_type="ec")
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert key.curve.name == "secp256r1"  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        mint_ca("x", now=NOW, key_type="dsa")
    with pytest.raises(ValueError):
        mint_ca("x", now=datetime(2026, 1, 1))  # naive time


def test_fingerprint_and_validity(ca) -> None:  # type: ignore[no-untyped-def]
    fp = ca_fingerprint(ca.cert_pem)
    assert len(fp.split(":")) == 32
    assert ca_valid_at(ca.cert_pem, NOW)
    assert not ca_valid_at(ca.cert_pem, NOW + timedelta(days=30))
    assert not ca_valid_at(ca.cert_pem, NOW - timedelta(days=2))


def test_state_keeps_the_key_0600_and_the_certificate_readable(ca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LocalStateStore(str(tmp_path))
    identity = "impl-abcde"
    write_ca(store, identity, "guard", ca)
    key_file = tmp_path / identity / ca_key_path("guard")
    cert_file = tmp_path / identity / ca_cert_path("guard")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert cert_file.stat().st_mode & 0o777 == 0o644
    assert read_ca(store, identity, "guard") == ca
    assert read_ca(store, identity, "egress-proxy") is None


def test_ensure_ca_reuses_a_valid_ca_and_replaces_an_expired_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LocalStateStore(str(tmp_path))
    first = ensure_ca(store, "impl-abcde", "egress-proxy", now=NOW)
    assert ensure_ca(store, "impl-abcde", "egress-proxy", now=NOW + timedelta(days=1)) == first
    renewed = ensure_ca(store, "impl-abcde", "egress-proxy", now=NOW + timedelta(days=40))
    assert renewed != first
    assert read_ca(store, "impl-abcde", "egress-proxy") == renewed
