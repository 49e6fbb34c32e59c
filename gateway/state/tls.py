"""The listeners' TLS context: the configured certificate, or a self-signed one the state keeps.

Without ``tls.cert_file``/``tls.key_file`` the gateway creates ``<state_dir>/tls/selfsigned.crt`` and
``selfsigned.key`` (key 0600) for ``server.hostname``, ``localhost``, 127.0.0.1 and ::1, and makes a new
one when the host name changes or the certificate is about to expire. Mail clients warn about a
self-signed certificate (Thunderbird lets you accept it; Gmail's "Send mail as" refuses it: Gmail needs
a certificate from a public CA that matches the host name).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.errors import ConfigError
from gateway.logs import log_event
from gateway.settings import TlsSettings
from gateway.state.files import atomic_write, private_directory
from gateway.state.layout import StateLayout

logger = logging.getLogger(__name__)

SELF_SIGNED_CERT = "selfsigned.crt"
SELF_SIGNED_KEY = "selfsigned.key"
# 825 days is the longest validity Apple platforms accept for a server certificate.
_VALIDITY = datetime.timedelta(days=825)
_RENEW_BEFORE = datetime.timedelta(days=30)


def server_context(tls: TlsSettings, state_dir: Path, hostname: str) -> ssl.SSLContext:
    """A server-side SSLContext (TLS 1.2+) for both listeners. Unusable files raise ConfigError."""
    if tls.cert_file is not None and tls.key_file is not None:
        return _context(tls.cert_file, tls.key_file)
    folder = StateLayout(state_dir).tls
    try:
        return _context(*ensure_self_signed(folder, hostname))
    except ConfigError:
        # Our own pair is unusable (say, a crash between writing the key and the certificate): remake it.
        return _context(*ensure_self_signed(folder, hostname, renew=True))


def _context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    except FileNotFoundError as exc:
        raise ConfigError(f"tls: file not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"tls: cannot use certificate {cert_file} with key {key_file}: {exc}"
            " (both must be PEM, and the key must belong to the certificate)"
        ) from None
    return context


def ensure_self_signed(folder: Path, hostname: str, renew: bool = False) -> tuple[Path, Path]:
    """Return (cert, key) in ``folder``, creating or renewing the self-signed pair when needed."""
    cert_path, key_path = folder / SELF_SIGNED_CERT, folder / SELF_SIGNED_KEY
    if not renew and key_path.exists() and _still_good(cert_path, hostname):
        return cert_path, key_path
    private_directory(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    alt_names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dict.fromkeys((hostname, "localhost"))]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    log_event(logger, "tls.self_signed_created", path=cert_path, hostname=hostname, sha256=fingerprint)
    return cert_path, key_path


def _still_good(cert_path: Path, hostname: str) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    fresh = certificate.not_valid_after_utc - _RENEW_BEFORE > datetime.datetime.now(datetime.UTC)
    return fresh and hostname.lower() in (dns.lower() for dns in names.get_values_for_type(x509.DNSName))


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    atomic_write(path, data, mode=mode)
