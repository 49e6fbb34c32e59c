"""TLS material for the end-to-end suite: one test CA; one certificate the gateway and Postfix present."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

NAMES = ("localhost", "127.0.0.1", "gateway.example.test", "upstream.example.test")


@dataclass(frozen=True)
class TlsMaterial:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_material(folder: Path) -> TlsMaterial:
    """Write ca.pem, cert.pem (chain) and key.pem (0600) into ``folder``."""
    ca = trustme.CA(organization_name="conduct-gateway e2e CA")
    cert = ca.issue_cert(*NAMES)
    material = TlsMaterial(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    ca.cert_pem.write_to_path(str(material.ca_file))
    cert.private_key_pem.write_to_path(str(material.key_file))
    material.key_file.chmod(0o600)
    for index, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(material.cert_file), append=index > 0)
    return material
