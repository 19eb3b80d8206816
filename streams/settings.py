"""One settings object for the whole app, read from ``STREAMREC_*`` environment variables.

Every field below is one environment variable: the field name upper-cased with the
``STREAMREC_`` prefix (``kafka_bootstrap`` -> ``STREAMREC_KAFKA_BOOTSTRAP``).

>>> s = Settings(k=5)
>>> s.k, s.topic_events
(5, 'events')
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.policies import PolicyName
from streams.security import SaslMechanism, SecurityProtocol

EncoderKind = Literal["triton", "local"]
Guarantee = Literal["at_least_once", "exactly_once"]
IndexKind = Literal["exact", "hnsw"]
BanditKind = Literal["thompson", "linucb"]
Role = Literal["serve", "learn", "both"]


def default_cache_dir() -> Path:
    """Where local Kafka jars, broker data and the Triton model repository live (git-ignored)."""
    return Path(__file__).resolve().parent.parent / ".cache"


class Settings(BaseSettings):
    """Runtime configuration of a streamrec worker, the CLI and the local real parts."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    # --- Kafka -----------------------------------------------------------------------
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    app_id: str = Field(default="streamrec", description="Faust app id: consumer group and changelog topic prefix")
    topic_items: str = Field(default="items", description="Catalog topic (compacted, keyed by item_id)")
    topic_events: str = Field(default="events", description="Click/view events topic (keyed by user_id)")
    topic_recommendations: str = Field(default="recommendations", description="Output topic (keyed by user_id)")
    topic_dead_letter: str = Field(default="events-dlq", description="Malformed input with its reason")
    partitions: int = Field(default=4, ge=1, description="Partitions of the topics the worker creates")
    session_timeout_s: float = Field(default=10.0, gt=0, description="Consumer group session timeout")
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (every Kafka client uses it)"
    )
    kafka_auth_mechanism: SaslMechanism = Field(
        default="SCRAM-SHA-512", description="SASL mechanism of SASL_* protocols: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
    )
    kafka_credentials_dir: Path = Field(
        default=Path("/etc/streamrec/kafka"),
        description="Files ca.crt, user.crt + user.key, username + password (secrets come only from files)",
    )

    # --- Encoder ---------------------------------------------------------------------
    encoder: EncoderKind = Field(default="triton", description="'triton' (gRPC to Triton) or 'local' (in-process)")
    triton_url: str = Field(default="127.0.0.1:8001", description="Triton gRPC endpoint host:port")
    triton_ssl: bool = Field(default=False, description="gRPC to Triton over TLS")
    triton_ssl_root_cert: str = Field(
        default="", description="PEM file of the CA that signed Triton's certificate (empty: the system's CAs)"
    )
    triton_model: str = Field(default="text_encoder", description="Name of the encoder model in Triton")
    encoder_batch_size: int = Field(default=64, ge=1, description="Texts per encoder request")
    encoder_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one encoder request")

    # --- Recommendation --------------------------------------------------------------
    k: int = Field(default=10, ge=1, le=500, description="Length of each recommendation list")
    policy: PolicyName = Field(
        default="dpp_explore", description="Policy: relevance, mmr, dpp, calibrated or dpp_explore"
    )
    ab_split: str = Field(
        default="", description="A/B split by user, e.g. 'mmr=1,dpp_explore=1' (empty: everyone gets the policy)"
    )
    ab_salt: str = Field(default="streamrec", description="Salt of the user hash; change it to reshuffle the split")
    mmr_lambda: float = Field(default=0.7, ge=0.0, le=1.0, description="MMR trade-off: 1 = pure relevance")
    dpp_theta: float = Field(default=0.7, ge=0.0, le=1.0, description="DPP trade-off: 1 = pure relevance")
    calibration_lambda: float = Field(default=0.5, ge=0.0, le=1.0, description="Calibration weight: 0 = relevance")
    explore_share: float = Field(default=0.2, ge=0.0, le=1.0, description="Share of slots for *_explore policies")
    bandit: BanditKind = Field(default="thompson", description="Exploration bandit: thompson or linucb")
    feedback_window_s: float = Field(
        default=1800.0, gt=0, description="Event-time window in which an engagement rewards an impression"
    )
    interests: int = Field(default=3, ge=1, le=8, description="Interest centroids per user")
    index: IndexKind = Field(
        default="exact", description="Item vector index: 'exact' (numpy) or 'hnsw' (hnswlib, approximate)"
    )
    candidates: str = Field(
        default="similar=200,covisited=50,collaborative=50,trending=50,fresh=20,explore=50",
        pattern=r"^\s*((similar|covisited|collaborative|trending|fresh|explore)=\d+\s*(,\s*|$))*$",
        description="Candidates per source before de-duplication (similar is split over the user's interests)",
    )
    covisit_recency: float = Field(
        default=0.8, gt=0.0, le=1.0, description="Weight of each older recent item when co-visitation scores a "
        "user's candidates: the last item weighs 1, the one before this, then its square (1: plain item-kNN)",
    )
    rerank_pool: int = Field(
        default=0, ge=0, description="The most relevant candidates each list's reranker sees (0: the whole pool)"
    )
    compact_dim: int = Field(
        default=128, ge=0, description="Dimensions of the item vectors compared while serving: nearest items, the "
        "cosine feature, the rerankers' similarity (0: the full vectors; else their projection on the catalog's "
        "top singular vectors)"
    )
    interest_half_life: float = Field(
        default=50.0, gt=0, description="Half-life of the interests, in the user's positive events"
    )
    history_size: int = Field(default=50, ge=1, description="Engaged items remembered per user (excluded from lists)")
    role: Role = Field(
        default="both", description="What a worker does: serve (lists from the latest snapshot of the shared "
        "models, lessons to the learner), learn (the shared models from every worker's lessons, snapshots "
        "published), or both in one process (learns in place; for one worker)",
    )
    snapshot_interval_s: float = Field(
        default=30.0, gt=0, description="How often the learner publishes a snapshot of the shared models"
    )
    follow_lessons: bool = Field(
        default=True, description="A serving worker also learns the other workers' lessons as they arrive on the "
        "learning topic (its models as fresh as one worker's between two snapshots; each worker then does the "
        "learning work of the whole stream)"
    )
    unknown_item_timeout_s: float = Field(
        default=3600.0, gt=0, description="How long an event waits for its item: one for an item not on the items "
        "topic yet is parked in its user's state (the worker's clock), then dead-lettered as unknown_item; one for "
        "an item without a vector yet is handled at once and its interest update held (event time), then dropped"
    )
    max_waiting_events: int = Field(
        default=100_000, ge=0, description="Events parked for items not on the items topic yet, per worker (32 per "
        "user); beyond it an event for an unknown item is dead-lettered at once"
    )

    # --- Worker ----------------------------------------------------------------------
    web_host: str = Field(default="127.0.0.1", description="Bind address of the worker's HTTP endpoint")
    web_port: int = Field(default=6066, ge=0, le=65535, description="Port of the worker's HTTP endpoint")
    data_dir: Path = Field(default_factory=lambda: default_cache_dir() / "worker", description="Faust table data")
    batch_size: int = Field(default=500, ge=1, description="Events per micro-batch")
    batch_timeout_s: float = Field(
        default=0.01, gt=0, description="Shortest time between the starts of two micro-batches unless one fills: "
        "an event after a quiet spell is taken at once, one that comes sooner waits at most this long"
    )
    fetch_min_bytes: int = Field(
        default=16384, ge=1, description="Bytes a worker's fetch asks the broker to gather before it answers (or "
        "fetch_max_wait_ms passes): one worker here kept up with 1,000 events/s with 16384 (p99 ~0.2-0.3 s) and "
        "fell behind with Faust's own fetches (1: Faust's fetches untouched, ~5 ms less p50 at 100 events/s)"
    )
    fetch_max_wait_ms: int = Field(
        default=10, ge=0, description="With fetch_min_bytes above 1: the longest the broker holds a worker's fetch "
        "for them (Faust's own: 1,500 ms); what they add to latency at low rates"
    )
    gc_thresholds: tuple[int, int, int] = Field(
        default=(50_000, 50, 100), description="Python's garbage collector thresholds in a worker (and the "
        "evaluation and bench core, to compute alike, and the load generators of bench pipeline and the demo, "
        "which otherwise paused for full collections): Python's own (700, 10, 10) collect so often among Faust's "
        "and the client's many short-lived objects that one worker spent about 8 % more CPU per event flat out"
    )
    processing_guarantee: Guarantee = Field(
        default="at_least_once",
        description="'at_least_once': offsets committed after the output is acknowledged (a crash may "
        "repeat a batch); 'exactly_once': each input partition's output and offset in one Kafka "
        "transaction (readers use read_committed)",
    )

    @property
    def isolation_level(self) -> str:
        """How to read what the worker wrote: under exactly-once, aborted transactions are skipped."""
        return "read_committed" if self.processing_guarantee == "exactly_once" else "read_uncommitted"

    # --- Local real parts ------------------------------------------------------------
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Kafka jars, broker data, model repo")


def env_var_name(field: str) -> str:
    """The environment variable of one settings field (``k`` -> ``STREAMREC_K``)."""
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def env_var_names() -> list[str]:
    """Every environment variable the settings object reads (used by docs and manifest tests)."""
    return [env_var_name(name) for name in Settings.model_fields]
