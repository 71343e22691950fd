"""TLS and mutual TLS over real channels: a server process started with --tls-cert/--tls-key
(and --tls-client-ca), clients with and without the right CA and certificates, the CLI's options,
and the start-up checks on the files. Certificates are made here (a throwaway CA per session).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from artifactd.client import ArtifactClient
from artifactd.client.settings import ClientSettings
from artifactd.protocol.errors import InvalidArgument, PermissionDenied, Unavailable
from artifactd_server.tls import TlsFiles, exposure_warning, server_credentials

from servers import ServerProcess, run_cli, start_server


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    stranger_cert: Path  # signed by other_ca
    stranger_key: Path


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _write_key(d / "ca.key")
    ca = _pem(d / "ca.pem", _certificate("artifactd test CA", ca_key, None, ca=True))
    server_key = _write_key(d / "server.key")
    server = _certificate("artifactd", server_key, ("artifactd test CA", ca_key), server=True)
    client_key = _write_key(d / "client.key")
    client = _certificate("alice", client_key, ("artifactd test CA", ca_key))
    other_key = _write_key(d / "other-ca.key")
    other = _pem(d / "other-ca.pem", _certificate("another CA", other_key, None, ca=True))
    stranger_key = _write_key(d / "stranger.key")
    stranger = _certificate("mallory", stranger_key, ("another CA", other_key))
    return Pki(
        ca, _pem(d / "server.pem", server), d / "server.key", _pem(d / "client.pem", client),
        d / "client.key", other, _pem(d / "stranger.pem", stranger), d / "stranger.key",
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("tls")
    server = start_server(
        base / "store", base / "run", "--tls-cert", str(pki.server_cert), "--tls-key",
        str(pki.server_key), client=ClientSettings(tls_ca=str(pki.ca)),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log_text()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("mtls")
    server = start_server(
        base / "store", base / "run", "--tls-cert", str(pki.server_cert), "--tls-key",
        str(pki.server_key), "--tls-client-ca", str(pki.ca),
        client=ClientSettings(tls_ca=str(pki.ca), client_cert=str(pki.client_cert),
                              client_key=str(pki.client_key)),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log_text()


def roundtrip(target: str, settings: ClientSettings, tmp_path: Path) -> str:
    source = tmp_path / "hello.txt"
    source.write_text("over TLS")
    with ArtifactClient(target, settings=settings) as client:
        client.log_artifact(source, "tls")
        return Path(client.download_artifacts("tls/hello.txt", tmp_path / "back")).read_text()


def refused(target: str, settings: ClientSettings, tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        roundtrip(target, settings, tmp_path)


FAST = {"rpc_timeout": 5.0, "max_retries": 0}


def test_tls_round_trip_and_refusals(tls_server: ServerProcess, pki: Pki, tmp_path: Path) -> None:
    assert roundtrip(tls_server.target, ClientSettings(tls_ca=str(pki.ca)), tmp_path) == "over TLS"
    refused(tls_server.target, ClientSettings(**FAST), tmp_path)  # plaintext to a TLS server
    refused(tls_server.target, ClientSettings(tls_ca=str(pki.other_ca), **FAST), tmp_path)
    refused(tls_server.target, ClientSettings(tls=True, **FAST), tmp_path)  # not a system CA


def test_mutual_tls_needs_a_certificate_from_the_client_ca(
    mtls_server: ServerProcess, pki: Pki, tmp_path: Path
) -> None:
    good = ClientSettings(
        tls_ca=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key)
    )
    assert roundtrip(mtls_server.target, good, tmp_path) == "over TLS"
    refused(mtls_server.target, ClientSettings(tls_ca=str(pki.ca), **FAST), tmp_path)
    stranger = ClientSettings(
        tls_ca=str(pki.ca), client_cert=str(pki.stranger_cert),
        client_key=str(pki.stranger_key), **FAST,
    )  # fmt: skip
    refused(mtls_server.target, stranger, tmp_path)


def test_the_cli_takes_tls_options_and_variables(
    mtls_server: ServerProcess, pki: Pki, tmp_path: Path
) -> None:
    env = {"ARTIFACTD_SERVER": mtls_server.target}
    flags = ["--tls-ca", str(pki.ca), "--client-cert", str(pki.client_cert),
             "--client-key", str(pki.client_key)]  # fmt: skip
    ok = run_cli(*flags, "health", env=env)
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
    variables = {**env, "ARTIFACTD_TLS_CA": str(pki.ca),
                 "ARTIFACTD_CLIENT_CERT": str(pki.client_cert),
                 "ARTIFACTD_CLIENT_KEY": str(pki.client_key)}  # fmt: skip
    listed = run_cli("artifacts", "list", env=variables)
    assert listed.returncode == 0, listed.stderr
    plain = run_cli("health", "--timeout", "2", env=env)
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (lambda p: TlsFiles(cert=str(p.server_cert)), "needs both --tls-cert and --tls-key"),
        (lambda p: TlsFiles(client_ca=str(p.ca)), "needs both"),
        (lambda p: TlsFiles(str(p.server_cert), str(p.client_key)), "does not belong"),
        (lambda p: TlsFiles(str(p.server_cert), "/nonexistent/key.pem"), "cannot read"),
        (lambda p: TlsFiles(str(p.server_key), str(p.server_key)), "cannot be read"),
        (lambda p: TlsFiles(str(p.server_cert), str(p.server_key), "/etc/hostname"),
         "not PEM"),
    ],
)  # fmt: skip
def test_bad_tls_files_are_refused_at_start_up(pki: Pki, files: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        server_credentials(files(pki))  # type: ignore[operator]


def test_serve_refuses_bad_tls_files_with_one_line(pki: Pki, tmp_path: Path) -> None:
    done = run_cli(
        "serve", "--port", "0", "--tls-cert", str(pki.server_cert), "--tls-key",
        str(pki.client_key), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("artifactd: cannot serve: the TLS")


@pytest.mark.parametrize(
    ("host", "tls", "warns"),
    [
        ("127.0.0.1", False, False), ("::1", False, False), ("localhost", False, False),
        ("0.0.0.0", False, True), ("::", False, True), ("10.1.2.3", False, True),
        ("artifacts.internal", False, True),
    ],
)  # fmt: skip
def test_plaintext_beyond_loopback_is_warned_about(host: str, tls: bool, warns: bool) -> None:
    warning = exposure_warning(host, tls)
    assert (warning is not None) == warns
    if warning:
        assert "WITHOUT TLS OR AUTHENTICATION" in warning


def test_half_protected_exposure_is_warned_about_too() -> None:
    assert "WITHOUT AUTHENTICATION" in (exposure_warning("0.0.0.0", True) or "")
    assert "unencrypted" in (exposure_warning("0.0.0.0", False, authenticated=True) or "")
    assert exposure_warning("0.0.0.0", True, authenticated=True) is None
    assert exposure_warning("127.0.0.1", False, authenticated=False) is None


def test_a_client_certificate_is_an_identity_with_roles(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    base = tmp_path_factory.mktemp("mtls-auth")
    tokens = base / "tokens.toml"
    tokens.write_text('[[certificate]]\ncommon_name = "alice"\nroles = ["reader"]\n')
    alice = ClientSettings(
        tls_ca=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key),
        max_retries=0,
    )  # fmt: skip
    server = start_server(
        base / "store", base / "run", "--tls-cert", str(pki.server_cert), "--tls-key",
        str(pki.server_key), "--tls-client-ca", str(pki.ca), "--auth-tokens-file", str(tokens),
        client=alice,
    )  # fmt: skip
    try:
        (base / "store" / "seen.txt").write_text("readable")
        with ArtifactClient(server.target, settings=alice) as client:
            assert [f.path for f in client.list_artifacts()] == ["seen.txt"]
            source = tmp_path / "new.txt"
            source.write_text("not allowed")
            with pytest.raises(PermissionDenied, match="alice may not do this"):
                client.log_artifact(source)
    finally:
        assert server.stop() == 0, server.log_text()
