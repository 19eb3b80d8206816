"""Settings to Kafka client configuration: one translation for Faust and aiokafka, secrets only from files."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from streams.app import create_app
from streams.harness.worker_process import settings_env
from streams.security import KafkaConnection, KafkaSecurityError, triton_client_kwargs
from streams.settings import Settings

SECRET = "s3cret-Passw0rd"


def credentials(folder: Path, *names: str) -> Path:
    folder.mkdir(exist_ok=True)
    content = {"username": "app\n", "password": SECRET + "\n", "ca.crt": "", "user.crt": "", "user.key": ""}
    for name in names:
        (folder / name).write_text(content[name])
    return folder


def test_plaintext_reads_no_files(tmp_path: Path) -> None:
    kafka = KafkaConnection.from_settings(Settings(kafka_credentials_dir=tmp_path / "absent"))
    assert kafka.aiokafka() == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert kafka.faust_credentials() is None


def test_sasl_reads_username_and_password_from_files(tmp_path: Path) -> None:
    folder = credentials(tmp_path / "c", "username", "password")
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_credentials_dir=folder)
    kafka = KafkaConnection.from_settings(s)
    kw = kafka.aiokafka()
    assert (kw["security_protocol"], kw["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("app", SECRET)  # newline stripped
    assert "ssl_context" not in kw
    assert SECRET not in repr(kafka) and SECRET not in str(s) and SECRET not in str(settings_env(s))


def test_sasl_ssl_verifies_the_broker(tmp_path: Path) -> None:
    folder = credentials(tmp_path / "c", "username", "password")
    kafka = KafkaConnection.from_settings(
        Settings(kafka_security_protocol="SASL_SSL", kafka_auth_mechanism="SCRAM-SHA-256", kafka_credentials_dir=folder)
    )
    context = kafka.aiokafka()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert kafka.aiokafka()["sasl_mechanism"] == "SCRAM-SHA-256"


def test_the_faust_app_gets_the_same_connection(tmp_path: Path) -> None:
    folder = credentials(tmp_path / "c", "username", "password")
    s = Settings(
        kafka_bootstrap="b1:9093,b2:9093", kafka_security_protocol="SASL_SSL", kafka_credentials_dir=folder
    )
    app = create_app(s)
    creds = app.conf.broker_credentials
    assert [str(url) for url in app.conf.broker] == ["kafka://b1:9093", "kafka://b2:9093"]
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (creds.username, creds.password) == ("app", SECRET)
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert SECRET not in repr(creds)


@pytest.mark.parametrize(
    ("protocol", "files", "complaint"),
    [
        ("SASL_SSL", ("username",), "password"),
        ("SASL_PLAINTEXT", ("password",), "username"),
        ("SSL", ("user.crt",), "user.key"),
    ],
)
def test_missing_credentials_are_refused_at_start(tmp_path: Path, protocol: str, files: tuple[str, ...],
                                                  complaint: str) -> None:
    folder = credentials(tmp_path / "c", *files)
    with pytest.raises(KafkaSecurityError, match=complaint):
        KafkaConnection.from_settings(Settings(kafka_security_protocol=protocol, kafka_credentials_dir=folder))


def test_triton_tls_arguments() -> None:
    assert triton_client_kwargs(Settings()) == {}
    assert triton_client_kwargs(Settings(triton_ssl=True)) == {"ssl": True, "root_certificates": None}
    assert triton_client_kwargs(Settings(triton_ssl=True, triton_ssl_root_cert="/ca.crt")) == {
        "ssl": True,
        "root_certificates": "/ca.crt",
    }


def test_the_http_endpoint_binds_to_loopback_unless_told() -> None:
    assert Settings().web_host == "127.0.0.1"
    app = create_app(Settings())
    assert (app.conf.web_bind, app.conf.web_host) == ("127.0.0.1", "127.0.0.1")
