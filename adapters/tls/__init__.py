"""Per-bottle certificate authorities, minted with ``cryptography``."""

from bottle.adapters.tls.ca import (
    CertificateAuthority,
    LeafCertificate,
    ca_fingerprint,
    ca_valid_at,
    ensure_ca,
    issue_leaf,
    load_ca,
    mint_ca,
    mitmproxy_ca_pem,
    read_ca,
    write_ca,
)

__all__ = [
    "CertificateAuthority",
    "LeafCertificate",
    "ca_fingerprint",
    "ca_valid_at",
    "ensure_ca",
    "issue_leaf",
    "load_ca",
    "mint_ca",
    "mitmproxy_ca_pem",
    "read_ca",
    "write_ca",
]
