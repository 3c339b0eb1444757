"""Per-bottle certificate authorities.

Each bottle gets two CAs, new for every bottle: the egress proxy's (the agent
trusts it, so the proxy can read the agent's HTTPS) and the guard's (the
egress proxy trusts it, so the guard can scan what the proxy sends on). A CA
lives only as long as its bottle's state; nothing outside the bottle trusts it.

Formats:
- ``CertificateAuthority.key_pem``: PKCS#8 PEM, unencrypted. Secret: written
  through the ``StateStore`` with ``secret=True`` (0600) and copied into its
  own sidecar only.
- ``CertificateAuthority.cert_pem``: the certificate alone, for trust stores
  (the agent's, the egress proxy's upstream trust).
- ``mitmproxy_ca_pem``: key then certificate in one file, the
  ``mitmproxy-ca.pem`` mitmproxy loads from its confdir.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bottle.core.state import ca_cert_path, ca_key_path
from bottle.ports.state import StateStore

DEFAULT_VALIDITY = timedelta(days=30)
# Clocks in containers and on laptops drift; a certificate that starts in
# the future is refused, one that started yesterday is not.
BACKDATE = timedelta(days=1)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA: PEM private key (secret) and PEM certificate. ``repr`` hides the key."""

    key_pem: bytes
    cert_pem: bytes

    def mitmproxy_pem(self) -> bytes:
        """Key and certificate concatenated, as mitmproxy's ``mitmproxy-ca.pem``."""
        return mitmproxy_ca_pem(self.key_pem, self.cert_pem)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def __repr__(self) -> str:
        return f"CertificateAuthority(subject={self.certificate.subject.rfc4514_string()!r}, key=<hidden>)"


@dataclass(frozen=True)
class LeafCertificate:
    """A server certificate signed by a CA (test upstreams). ``repr`` hides the key."""

    key_pem: bytes
    cert_pem: bytes

    def __repr__(self) -> str:
        return "LeafCertificate(key=<hidden>)"


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}; expected 'rsa' or 'ec'")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(timezone.utc)


def mint_ca(
    common_name: str,
    *,
    now: datetime,
    valid_for: timedelta = DEFAULT_VALIDITY,
    key_type: str = "rsa",
) -> CertificateAuthority:
    """A new self-signed CA named ``common_name``, valid from a day before ``now`` for ``valid_for``.

    RSA-2048 by default (what mitmproxy itself mints, so every client that
    talks to mitmproxy accepts it); ``key_type="ec"`` gives P-256. The
    certificate carries what strict verifiers (OpenSSL 3, Python 3.13's
    ``VERIFY_X509_STRICT``) demand: critical basicConstraints CA:TRUE with
    pathlen 0, critical keyUsage keyCertSign + cRLSign, and subject and
    authority key identifiers.
    """
    now = _utc(now)
    key = _new_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bottle"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def issue_leaf(
    ca: CertificateAuthority,
    hostnames: Sequence[str],
    *,
    now: datetime,
    valid_for: timedelta = DEFAULT_VALIDITY,
) -> LeafCertificate:
    """A server certificate for ``hostnames`` (names or IP addresses) signed by ``ca``.

    Used for test upstreams that answer as a public name over TLS.
    """
    if not hostnames:
        raise ValueError("a leaf certificate needs at least one host name")
    now = _utc(now)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    ca_cert = ca.certificate
    if now >= ca_cert.not_valid_after_utc:
        raise ValueError("the CA has expired; mint a new one")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + valid_for, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return LeafCertificate(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def mitmproxy_ca_pem(key_pem: bytes, cert_pem: bytes) -> bytes:
    """``mitmproxy-ca.pem``: the private key followed by the certificate."""
    return key_pem.rstrip(b"\n") + b"\n" + cert_pem.rstrip(b"\n") + b"\n"


def load_ca(key_pem: bytes, cert_pem: bytes) -> CertificateAuthority:
    """Check that ``key_pem`` and ``cert_pem`` form a CA and return it.

    Raises ``ValueError`` (never quoting the key) when either does not parse,
    the certificate is not a CA, is not self-signed, or the key does not
    belong to it.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ValueError(f"the CA certificate does not parse ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("the CA private key does not parse (or is encrypted)") from None
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no basicConstraints; it is not a CA") from None
    if not bc.ca:
        raise ValueError("the certificate is not a CA (basicConstraints CA:FALSE)")
    pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    cert_pub = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if pub != cert_pub:
        raise ValueError("the private key does not belong to the CA certificate")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError("the CA certificate is not self-signed") from None
    return CertificateAuthority(key_pem, cert_pem)


def ca_fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER, as colon-separated hex (what ``openssl x509 -fingerprint`` shows)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def ca_valid_at(cert_pem: bytes, now: datetime, margin: timedelta = timedelta(hours=1)) -> bool:
    """True if the certificate is valid at ``now`` and still for ``margin`` after it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    now = _utc(now)
    return cert.not_valid_before_utc <= now and now + margin <= cert.not_valid_after_utc


def write_ca(store: StateStore, identity: str, role: str, ca: CertificateAuthority) -> None:
    """Keep ``ca`` in the bottle's state: the key 0600 (``secret=True``), the certificate 0644."""
    store.write(identity, ca_key_path(role), ca.key_pem, secret=True)
    store.write(identity, ca_cert_path(role), ca.cert_pem)


def read_ca(store: StateStore, identity: str, role: str) -> CertificateAuthority | None:
    """The CA of ``role`` kept in the bottle's state, or None if either half is missing.

    Raises ``ValueError`` if the stored halves do not form a CA.
    """
    key = store.read(identity, ca_key_path(role))
    cert = store.read(identity, ca_cert_path(role))
    if key is None or cert is None:
        return None
    return load_ca(key, cert)


def ensure_ca(
    store: StateStore,
    identity: str,
    role: str,
    *,
    now: datetime,
    valid_for: timedelta = DEFAULT_VALIDITY,
) -> CertificateAuthority:
    """The bottle's CA for ``role``: the stored one if it is whole and still valid, else a new one (stored).

    A resumed bottle keeps its CA, so the agent image's trust store stays right.
    """
    try:
        existing = read_ca(store, identity, role)
    except ValueError:
        existing = None
    if existing is not None and ca_valid_at(existing.cert_pem, now):
        return existing
    ca = mint_ca(f"bottle {role} CA {identity}", now=now, valid_for=valid_for)
    write_ca(store, identity, role, ca)
    return ca
