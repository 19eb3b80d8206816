"""A real single-node Apache Kafka broker (KRaft, broker+controller in one JVM) for development and tests.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` and are cached; the broker lives in
one ``home`` folder (properties, data, logs, pidfile), so a later process can find and stop it.

>>> KafkaBroker(home=Path("/tmp/kb"), libs=Path("/tmp/libs"), port=19092).bootstrap
'127.0.0.1:19092'

With ``security=SaslSsl(...)`` its only client listener is SASL_SSL (TLS + SCRAM-SHA-512), the broker talks to
itself over it too, and only the controller listener (never advertised to clients) stays plaintext.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from streams.local import _process
from streams.security import KafkaConnection

__all__ = [
    "KafkaBroker",
    "SaslSsl",
    "ensure_jars",
    "free_port",
    "libs_dir",
    "local_home",
]

POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
_MARKER = ".complete"
HOST = "127.0.0.1"

# Small heap and a cheap GC: a dev broker holds little data, and on 2 cores G1's extra threads
# compete with the broker. C2 stays on (TieredStopAtLevel=1 saved <0.5 s but costs throughput).
JVM_FLAGS = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
]


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"`{tool}` not found on PATH; the local Kafka broker needs Java 17+ and Maven")
    return path


def libs_dir(cache_dir: Path) -> Path:
    """Where the broker's jars are cached (absolute: mvn resolves paths against the pom)."""
    return cache_dir.resolve() / "kafka" / "libs"


def local_home(cache_dir: Path) -> Path:
    """The home of the developer broker that ``streamrec kafka up`` and the demo share."""
    return cache_dir / "kafka" / "broker"


def ensure_jars(cache_dir: Path) -> Path:
    """Return ``cache_dir/kafka/libs`` holding the broker's jars, fetching them with Maven when needed.

    The marker file holds a hash of the pom, so a version bump in the pom re-fetches; it is written only
    after a complete copy, so an interrupted fetch is simply retried.
    """
    libs = libs_dir(cache_dir)
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    marker = libs / _MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return libs
    mvn = _need("mvn")
    _need("java")
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={partial}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not any(partial.glob("kafka_*.jar")):
        raise RuntimeError(f"fetching Kafka jars with Maven failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    (partial / _MARKER).write_text(digest + "\n")
    shutil.rmtree(libs, ignore_errors=True)  # stale jars of another version would poison the classpath
    partial.rename(libs)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for tests)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _broker_answers(port: int, timeout_s: float = 1.0) -> bool:
    """True when a Metadata request (v4; Kafka 4 dropped v0-3) lists at least one broker.

    A listed broker means it registered with the controller and is unfenced, i.e. clients can use it;
    a raw request keeps this synchronous and free of client-library retries.
    """
    client_id = b"streamrec-probe"
    header = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
    body = struct.pack(">ib", 0, 0)  # no topics, no auto-creation
    request = header + body
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as s:
            s.sendall(struct.pack(">i", len(request)) + request)
            head = _recv_exact(s, 4)
            (size,) = struct.unpack(">i", head)
            payload = _recv_exact(s, size)
    except OSError:
        return False
    if len(payload) < 12:
        return False
    correlation, _throttle, n_brokers = struct.unpack(">iii", payload[:12])
    return bool(correlation == 7 and n_brokers > 0)


def _secure_broker_answers(kafka: KafkaConnection, timeout_s: float = 5.0) -> bool:
    """:func:`_broker_answers` through TLS and SASL, which a hand-made request cannot pass: aiokafka's
    metadata request, in a thread of its own so that a caller's running event loop is no obstacle."""
    from aiokafka import AIOKafkaClient

    host, port = kafka.bootstrap.split(",")[0].rsplit(":", 1)
    try:  # not listening yet: say so without a client that logs every refused connection
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False

    async def probe() -> bool:
        client = AIOKafkaClient(**kafka.aiokafka(), request_timeout_ms=int(timeout_s * 1000))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            return bool(client.cluster.brokers())
        finally:
            await client.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(asyncio.run, probe()).result()
        except Exception:
            return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


@dataclass(frozen=True)
class SaslSsl:
    """A SASL_SSL client listener: TLS from PEM files, SCRAM-SHA-512 users created when storage is formatted."""

    keystore: Path  #: PEM: the broker's unencrypted PKCS#8 key and certificate chain (for 127.0.0.1)
    truststore: Path  #: PEM: the CA; the broker verifies its own inter-broker connections with it
    #: SCRAM users, name -> password; the first is the broker's own inter-broker login
    users: Mapping[str, str] = field(repr=False)
    mechanism: str = "SCRAM-SHA-512"

    @property
    def broker_user(self) -> tuple[str, str]:
        return next(iter(self.users.items()))


@dataclass
class KafkaBroker:
    """One KRaft broker+controller process whose whole state lives under ``home``."""

    home: Path
    libs: Path
    port: int = 9092
    controller_port: int = 9093
    security: SaslSsl | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_home(cls, home: Path, libs: Path) -> KafkaBroker:
        """The broker as last configured in ``home`` (its ports read from server.properties), or defaults."""
        broker = cls(home=home, libs=libs)
        ports = broker._configured_ports()
        if ports is not None:
            broker.port, broker.controller_port = ports
        return broker

    # --- paths -------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def listener(self) -> str:
        """The client (and inter-broker) listener's name, which is also its security protocol."""
        return "PLAINTEXT" if self.security is None else "SASL_SSL"

    def connection(self, user: str | None = None, password: str | None = None) -> KafkaConnection:
        """How a client reaches this broker: plaintext, or SASL_SSL as ``user`` (default: the broker's own)."""
        if self.security is None:
            return KafkaConnection(self.bootstrap)
        name, known = self.security.broker_user
        if user is not None:
            name, known = user, self.security.users.get(user, "")
        return KafkaConnection(
            self.bootstrap,
            "SASL_SSL",
            mechanism="SCRAM-SHA-512",
            username=name,
            password=SecretStr(known if password is None else password),
            cafile=self.security.truststore,
        )

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def pidfile(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    @property
    def out_file(self) -> Path:
        return self.home / "kafka.out"

    # --- state -------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of this home's broker if that process is alive (checked against its command line)."""
        return _process.read_pidfile(self.pidfile, self._marker)

    def is_running(self) -> bool:
        """The process is alive and the broker answers a Metadata request on its port."""
        return self.pid() is not None and self._answers()

    def _answers(self) -> bool:
        if self.security is None:
            return _broker_answers(self.port)
        return _secure_broker_answers(self.connection())

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout_s: float = 90) -> None:
        """Start the broker (no-op when this home's broker already runs) and wait until it serves clients."""
        deadline = time.monotonic() + timeout_s
        pid = self.pid()
        if pid is not None:
            running = self._configured_ports()
            if running is not None and running != (self.port, self.controller_port):
                raise RuntimeError(
                    f"a broker (pid {pid}) already runs from {self.home} on ports {running}; stop it first"
                )
            self._wait_ready(pid, deadline)  # may still be starting up in another process
            return
        java = _need("java")
        if not any(self.libs.glob("kafka_*.jar")):
            raise RuntimeError(f"no Kafka jars in {self.libs}; call ensure_jars() first")
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(self._server_properties())
        log4j = self.home / "log4j2.properties"
        log4j.write_text(self._log4j_properties())
        classpath = f"{self.libs}/*"
        jvm = [java, *JVM_FLAGS, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (self.data_dir / "meta.properties").is_file():
            self._format(jvm)
        self._proc = _process.spawn(
            [*jvm, "kafka.Kafka", str(self.properties)], self.out_file, self.pidfile, cwd=self.home
        )
        try:
            self._wait_ready(self._proc.pid, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM the broker (clean KRaft shutdown), SIGKILL it after ``timeout_s``; no-op if not running."""
        _process.stop(self.pidfile, self._marker, timeout_s, proc=self._proc)
        self._proc = None

    # --- internals ---------------------------------------------------------------------------
    @property
    def _marker(self) -> str:
        # Guards the pidfile against pid reuse: the live process must be a broker started on this home.
        return str(self.properties)

    def _wait_ready(self, pid: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if (self._proc is not None and self._proc.poll() is not None) or not _process.pid_alive(pid):
                raise RuntimeError(f"Kafka broker exited during start-up:\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.2)
        raise TimeoutError(f"Kafka broker not ready on {self.bootstrap} in time:\n{self.log_tail()}")

    def _format(self, jvm: list[str]) -> None:
        # Kafka cluster ids are 16 random bytes, url-safe base64 without padding; like Kafka's own
        # Uuid.randomUuid, avoid a leading "-", which the command line would take for an option.
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        cmd = [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties)]
        if self.security is not None:  # KRaft keeps SCRAM credentials in its metadata log: create them now
            for name, password in self.security.users.items():
                cmd += ["--add-scram", f"{self.security.mechanism}=[name={name},password={password}]"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.home)
        if proc.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed:\n{(proc.stdout + proc.stderr)[-4000:]}")

    def _configured_ports(self) -> tuple[int, int] | None:
        try:
            text = self.properties.read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("listeners="):
                ports = dict(part.split("://", 1)[0:2] for part in line[len("listeners=") :].split(","))
                client = next(address for name, address in ports.items() if name != "CONTROLLER")
                return int(client.rsplit(":", 1)[1]), int(ports["CONTROLLER"].rsplit(":", 1)[1])
        return None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the broker's stdout and its WARN+ log, for error messages."""
        parts = []
        for path in (self.out_file, self.log_file):
            with contextlib.suppress(OSError):
                # Stack frames would crowd out the messages: keep record lines and their causes.
                kept = [
                    ln
                    for ln in path.read_text(errors="replace").splitlines()
                    if ln.strip() and not ln.startswith(("\t", " ", "..."))
                ]
                if kept:
                    parts.append(f"--- {path} ---\n" + "\n".join(kept[-lines:]))
        return "\n".join(parts) or "(no broker output)"

    def _server_properties(self) -> str:
        name = self.listener
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"{name}://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"{name}://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": name,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{name}:{name}",
            "log.dirs": str(self.data_dir),
            # one node: every internal topic must fit a replication factor of 1
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # tests and demos create consumer groups constantly; don't wait 3 s for more members
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",  # Faust creates its changelog topics itself
            "num.partitions": "1",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        if self.security is not None:
            user, password = self.security.broker_user
            mechanism = self.security.mechanism
            props |= {
                "sasl.enabled.mechanisms": mechanism,
                "sasl.mechanism.inter.broker.protocol": mechanism,
                f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{user}" password="{password}";'
                ),
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.security.keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.security.truststore),
                "ssl.endpoint.identification.algorithm": "https",  # the broker checks its own host name too
            }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _log4j_properties(self) -> str:
        return (
            "status = error\n"
            "appender.file.type = File\n"
            "appender.file.name = file\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = warn\n"
            "rootLogger.appenderRef.file.ref = file\n"
        )
