"""How every Kafka client of streamrec connects: TLS and SASL, from the settings, in one place.

The Faust app, the catalog loader, the lag probe, the harness' producer and consumer and the local
topic creation all take their connection from :class:`KafkaConnection`, so no client can be left on
plaintext by accident.

Secrets are read from files only (``STREAMREC_KAFKA_CREDENTIALS_DIR``, where Kubernetes mounts the
``streamrec-kafka`` Secret), never from environment variables, which leak through ``/proc/<pid>/environ``,
``kubectl describe`` and crash reports. The files, each optional unless the protocol needs it:

* ``ca.crt``: the CA that signed the brokers' certificates (absent: the system's trust store)
* ``user.crt`` + ``user.key``: a client certificate, for brokers that want mutual TLS
* ``username`` + ``password``: SASL credentials (required for ``SASL_*`` protocols)

>>> KafkaConnection("b:9092").aiokafka()
{'bootstrap_servers': 'b:9092', 'security_protocol': 'PLAINTEXT'}
>>> c = KafkaConnection("b:9093", "SASL_PLAINTEXT", username="u", password=SecretStr("pw"))
>>> "pw" in repr(c), c.aiokafka()["sasl_plain_password"]
(False, 'pw')
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

if TYPE_CHECKING:
    from streams.settings import Settings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]

#: File names inside the credentials directory (the keys of the Kubernetes Secret).
CA_FILE, CERT_FILE, KEY_FILE, USERNAME_FILE, PASSWORD_FILE = "ca.crt", "user.crt", "user.key", "username", "password"


class KafkaSecurityError(ValueError):
    """The settings ask for a protocol whose credentials are missing or unusable (never says a secret)."""


def _read_secret(path: Path) -> str:
    # Kubernetes Secrets and `echo > file` both tend to leave a trailing newline that is not the secret.
    return path.read_text(encoding="utf-8").rstrip("\r\n")


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to talk to them; :meth:`aiokafka` and :meth:`faust_credentials`
    give the same connection to both client libraries."""

    bootstrap: str
    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """Read the credentials directory as far as the protocol needs it."""
        protocol: SecurityProtocol = settings.kafka_security_protocol
        folder = settings.kafka_credentials_dir
        found = {name: folder / name for name in (CA_FILE, CERT_FILE, KEY_FILE, USERNAME_FILE, PASSWORD_FILE)}
        found = {name: path for name, path in found.items() if path.is_file()}
        uses_tls = protocol in ("SSL", "SASL_SSL")
        uses_sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        if uses_tls and (CERT_FILE in found) != (KEY_FILE in found):
            raise KafkaSecurityError(f"{folder}: {CERT_FILE} and {KEY_FILE} go together (mutual TLS)")
        username = password = None
        if uses_sasl:
            if USERNAME_FILE not in found or PASSWORD_FILE not in found:
                raise KafkaSecurityError(f"{protocol} needs the files {USERNAME_FILE} and {PASSWORD_FILE} in {folder}")
            username = _read_secret(found[USERNAME_FILE])
            password = SecretStr(_read_secret(found[PASSWORD_FILE]))
        return cls(
            bootstrap=settings.kafka_bootstrap,
            protocol=protocol,
            mechanism=settings.kafka_auth_mechanism,
            username=username,
            password=password,
            cafile=found.get(CA_FILE) if uses_tls else None,
            certfile=found.get(CERT_FILE) if uses_tls else None,
            keyfile=found.get(KEY_FILE) if uses_tls else None,
        )

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying client context (certificate and host name checked), or None without TLS."""
        if not self.uses_tls:
            return None
        # create_default_context: CERT_REQUIRED, check_hostname, TLS 1.2+; the system's CAs without ca.crt
        context = ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)
        if self.certfile and self.keyfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password.get_secret_value() if self.password else None
        return kwargs

    def faust_broker(self) -> list[str]:
        """Faust's ``broker`` argument: one URL per bootstrap server."""
        return [f"kafka://{host.strip()}" for host in self.bootstrap.split(",")]

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (None for plaintext); Faust hands them to aiokafka unchanged."""
        import faust  # only the worker needs Faust; the harness and the local tools do not

        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password.get_secret_value() if self.password else None,
                ssl_context=self.ssl_context(),  # None: SASL_PLAINTEXT, a context: SASL_SSL
                mechanism=self.mechanism,
            )
        if self.uses_tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


def as_connection(kafka: str | KafkaConnection) -> KafkaConnection:
    """A bare ``host:port[,...]`` string is a plaintext connection (local tools and tests)."""
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection(kafka)


def triton_client_kwargs(settings: Settings) -> dict[str, Any]:
    """tritonclient's gRPC TLS arguments: ``ssl`` and the CA (empty: the system's roots)."""
    if not settings.triton_ssl:
        return {}
    return {"ssl": True, "root_certificates": settings.triton_ssl_root_cert or None}
