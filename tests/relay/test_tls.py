"""The listeners' TLS context: configured certificates, and the self-signed one made at first start."""

# Fixtures are imported from smtp_fixtures (tests/relay/conftest.py is not ours); pytest passes them
# in as arguments of the same name.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import datetime
import ssl
import stat
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from gateway.errors import ConfigError
from gateway.settings import TlsSettings
from gateway.state.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY, ensure_self_signed, server_context
from tests.relay.smtp_fixtures import ca  # noqa: F401


async def handshake(context: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> str:
    """Serve one TLS connection with ``context`` on loopback; return the negotiated TLS version."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=server_hostname
        )
        assert await reader.readline() == b"hello\n"
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    return str(version)


def trusting(cert: Path) -> ssl.SSLContext:
    client = ssl.create_default_context()
    client.load_verify_locations(cert)
    return client


async def test_self_signed_certificate_is_made_at_first_start(tmp_path: Path) -> None:
    context = server_context(TlsSettings(), tmp_path, "mail.example.org")
    folder = tmp_path / "tls"
    cert, key = folder / SELF_SIGNED_CERT, folder / SELF_SIGNED_KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mail.example.org", "localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert await handshake(context, trusting(cert), "mail.example.org") in ("TLSv1.2", "TLSv1.3")
    assert await handshake(context, trusting(cert), "localhost")


def test_self_signed_certificate_is_reused_and_renewed_when_needed(tmp_path: Path) -> None:
    cert, _key = ensure_self_signed(tmp_path, "mail.example.org")
    first = cert.read_bytes()
    assert ensure_self_signed(tmp_path, "mail.example.org")[0].read_bytes() == first
    renamed = ensure_self_signed(tmp_path, "smtp.example.org")[0].read_bytes()
    assert renamed != first
    names = x509.load_pem_x509_certificate(renamed).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "smtp.example.org" in names.value.get_values_for_type(x509.DNSName)
    cert.write_text("not a certificate")
    assert ensure_self_signed(tmp_path, "smtp.example.org")[0].read_bytes() != renamed


def test_self_signed_certificate_is_valid_long_enough(tmp_path: Path) -> None:
    cert, _key = ensure_self_signed(tmp_path, "mail.example.org")
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    lifetime = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=800) < lifetime <= datetime.timedelta(days=825)


async def test_configured_certificate_is_used(tmp_path: Path, ca: trustme.CA) -> None:
    issued = ca.issue_cert("mail.example.org")
    cert, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(key))
    issued.private_key_and_cert_chain_pem.write_to_path(str(cert))
    context = server_context(TlsSettings(cert_file=cert, key_file=key), tmp_path, "mail.example.org")
    client = ssl.create_default_context()
    ca.configure_trust(client)
    assert await handshake(context, client, "mail.example.org")
    assert not (tmp_path / "tls").exists()


async def test_old_tls_versions_are_refused(tmp_path: Path) -> None:
    context = server_context(TlsSettings(), tmp_path, "localhost")
    client = trusting(tmp_path / "tls" / SELF_SIGNED_CERT)
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await handshake(context, client, "localhost") == "TLSv1.2"
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_unusable_certificate_files_are_config_errors(tmp_path: Path, ca: trustme.CA) -> None:
    issued = ca.issue_cert("mail.example.org")
    other = ca.issue_cert("other.example.org")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    other.private_key_pem.write_to_path(str(key))
    with pytest.raises(ConfigError, match="cannot use certificate"):
        server_context(TlsSettings(cert_file=cert, key_file=key), tmp_path, "mail.example.org")
    with pytest.raises(ConfigError, match="file not found"):
        server_context(
            TlsSettings(cert_file=tmp_path / "missing.pem", key_file=key), tmp_path, "x.example.org"
        )


async def test_a_broken_self_signed_pair_is_remade(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    ensure_self_signed(folder, "mail.example.org")
    old_cert = (folder / SELF_SIGNED_CERT).read_bytes()
    ensure_self_signed(tmp_path / "other", "mail.example.org")
    # A key that no longer belongs to the certificate (a crash between the two writes).
    (folder / SELF_SIGNED_KEY).write_bytes((tmp_path / "other" / SELF_SIGNED_KEY).read_bytes())
    context = server_context(TlsSettings(), tmp_path, "mail.example.org")
    assert (folder / SELF_SIGNED_CERT).read_bytes() != old_cert
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert await handshake(context, trusting(folder / SELF_SIGNED_CERT), "mail.example.org")
