"""The two ceilings of ``bench pipeline``: the same events passed through without a recommender.

``python -m streams.bench.passthrough aiokafka|faust --bootstrap B --source T --sink O --group G
--count N --result FILE`` consumes ``T`` from the beginning in a new group, decodes each event's
JSON, produces a small message per event to ``O`` and, after ``N`` events, writes
``{"events", "elapsed_s", "events_per_s", "cpu_s"}`` to ``FILE`` (the clock runs from the first
event consumed to the last output acknowledged, so start-up is not counted). The aiokafka one
then exits; the Faust one keeps running until it is terminated.

* ``aiokafka``: plain consumer and producer: fetch up to 2,000 records, decode, send, wait for
  the acks, commit: the floor of what any Python consumer on this machine pays per event.
* ``faust``: a separate tiny Faust app tuned as far as Faust goes (no waiting for an empty
  stream, a large stream buffer, 2,000 records per poll, producer linger and large batches),
  ``take_events`` micro-batches and output through the app's producer without waiting per message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LINGER_S = 0.005
MAX_BATCH_BYTES = 256 * 1024
POLL_RECORDS = 2000


@dataclass
class _Clock:
    """From the first event consumed to the last one done; writes the result once ``count`` are done."""

    count: int
    result: Path
    done: int = 0
    started: float = 0.0
    cpu_started: float = 0.0

    def begin(self) -> None:
        if not self.started:
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def finished(self, n: int) -> bool:
        self.done += n
        return self.done >= self.count

    def write(self) -> None:
        elapsed = time.perf_counter() - self.started
        report = {
            "events": self.done,
            "elapsed_s": elapsed,
            "events_per_s": self.done / elapsed,
            "cpu_s": time.process_time() - self.cpu_started,
        }
        tmp = self.result.with_suffix(".partial")
        tmp.write_text(json.dumps(report))
        tmp.rename(self.result)  # the bench polls for the file: it must appear whole


def small_output(raw: bytes) -> bytes:
    """Decode an event's JSON and answer with a small message naming it."""
    event = json.loads(raw)
    return json.dumps({"event_id": event["event_id"], "user_id": event["user_id"]}).encode()


async def run_aiokafka(args: argparse.Namespace) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    clock = _Clock(args.count, Path(args.result))
    consumer = AIOKafkaConsumer(
        args.source,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=POLL_RECORDS,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, linger_ms=int(LINGER_S * 1000), max_batch_size=MAX_BATCH_BYTES
    )
    await consumer.start()
    await producer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=POLL_RECORDS)
            records = [r for recs in batch.values() for r in recs]
            if not records:
                continue
            clock.begin()
            pending = [await producer.send(args.sink, key=r.key, value=small_output(r.value)) for r in records]
            await asyncio.gather(*pending)
            await consumer.commit()
            if clock.finished(len(records)):
                clock.write()
                return
    finally:
        await producer.stop()
        await consumer.stop()


def faust_app(args: argparse.Namespace, datadir: str) -> Any:
    import faust

    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        stream_buffer_maxsize=16 * POLL_RECORDS,
        broker_max_poll_records=POLL_RECORDS,
        producer_linger=LINGER_S,
        producer_max_batch_size=MAX_BATCH_BYTES,
    )
    source = app.topic(args.source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    clock = _Clock(args.count, Path(args.result))
    sent: list[Any] = []

    @app.agent(source)
    async def passthrough(stream: Any) -> None:
        async for batch in stream.take_events(POLL_RECORDS, within=0.01):
            clock.begin()
            for ev in batch:
                fut = await app.producer.send(args.sink, ev.message.key, small_output(ev.value), None, None, None)
                sent.append(fut)
            if clock.finished(len(batch)):
                await app.producer.flush()
                await asyncio.gather(*sent)  # every output acknowledged, errors raised
                clock.write()

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("kind", choices=["aiokafka", "faust"])
    for name in ("--bootstrap", "--source", "--sink", "--group", "--result"):
        parser.add_argument(name, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    if args.kind == "aiokafka":
        asyncio.run(run_aiokafka(args))
        return
    import faust

    with tempfile.TemporaryDirectory(prefix="streamrec-passthrough-") as datadir:
        faust.Worker(faust_app(args, datadir), loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main()
