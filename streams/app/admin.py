"""Production topic administration: creating the topics a worker needs, with the admin client.

Used by the worker itself (exactly-once's changelog, created inside a rebalance callback where Faust's
own declaration would deadlock) and by the harness (every topic of a run, as an operator would).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from streams.security import KafkaConnection, as_connection


async def acreate_topics(
    kafka: str | KafkaConnection,
    topics: dict[str, int],
    compacted: Iterable[str] = (),
    timeout_s: float = 30,
    replication: int = 1,
) -> None:
    """Create ``topics`` (name -> partitions); ``compacted`` ones get cleanup.policy=compact.

    Topics that already exist are left as they are. Returns once every partition has a leader,
    so clients that start right after do not log NotLeaderForPartition while the broker catches up.
    """
    compact = set(compacted)
    new = [
        NewTopic(name, parts, replication, topic_configs={"cleanup.policy": "compact"} if name in compact else None)
        for name, parts in topics.items()
    ]
    timeout_ms = int(timeout_s * 1000)
    admin = AIOKafkaAdminClient(**as_connection(kafka).aiokafka(), request_timeout_ms=timeout_ms)
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        response = await admin.create_topics(new, timeout_ms=timeout_ms)
        for topic, code, *message in response.topic_errors:
            if code and for_code(code) is not TopicAlreadyExistsError:
                raise for_code(code)(f"creating topic {topic!r} failed: {message}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            described = await admin.describe_topics(list(topics))
            if all(
                t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"topics {sorted(topics)} have no leaders after {timeout_s} s")
    finally:
        await admin.close()
