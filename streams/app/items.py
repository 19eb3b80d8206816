"""The items agent's batch: each catalog item embedded once per version, to ``<items>-vectors``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import numpy as np

from encoders import Encoder, EncoderError, LocalEncoder, TritonEncoder
from streams.app.batch import Outbox, Record
from streams.app.dead_letters import DeadLetters
from streams.contracts import DecodeError, EmbeddedItem, Item, Tombstone, b64_vector, decode_item_record, encode
from streams.security import triton_client_kwargs
from streams.settings import Settings

log = logging.getLogger(__name__)


def make_encoder(settings: Settings) -> Encoder:
    if settings.encoder == "local":
        return LocalEncoder(batch_size=settings.encoder_batch_size)
    return TritonEncoder(
        url=settings.triton_url,
        model=settings.triton_model,
        batch_size=settings.encoder_batch_size,
        timeout_s=settings.encoder_timeout_s,
        **triton_client_kwargs(settings),
    )


class ItemsHandler:
    """One batch of items: embedded (retried until the encoder answers), dead letters for the unusable.

    A tombstone is passed on to ``<items>-vectors`` as a tombstone (no encoder needed), which retires the
    item in every worker and lets compaction drop its vector; an item with ``available: false`` is
    embedded like any version and retired by the workers that load it.

    ``encoder`` is called for the encoder at the first batch (it is created inside the worker's event
    loop); ``vectors_topic`` is where the embedded items go.
    """

    def __init__(self, encoder: Callable[[], Encoder], dead_letters: DeadLetters, vectors_topic: str) -> None:
        self.encoder = encoder
        self.dead_letters = dead_letters
        self.vectors_topic = vectors_topic

    async def __call__(self, batch: Sequence[Record]) -> Outbox:
        out = Outbox()
        good: list[tuple[Record, Item]] = []
        for rec in batch:
            try:
                item = decode_item_record(rec.key, rec.value)
            except DecodeError as err:
                self.dead_letters.add(out, rec, err)
                continue
            if isinstance(item, Tombstone):
                out.add(rec.tp, self.vectors_topic, item.item_id.encode(), None)
            else:
                good.append((rec, item))
        if good:
            vectors = await encode_with_retry(self.encoder(), [item.embedding_text() for _, item in good])
            for (rec, item), vec in zip(good, vectors, strict=True):
                embedded = EmbeddedItem(item=item, vector_b64=b64_vector(vec))
                out.add(rec.tp, self.vectors_topic, item.item_id.encode(), encode(embedded))
        return out


async def encode_with_retry(encoder: Encoder, texts: Sequence[str], max_backoff_s: float = 30.0) -> np.ndarray:
    """Encode, retrying with backoff until the encoder answers: items are delayed, never dropped."""
    delay = 0.5
    while True:
        try:
            return await encoder.encode(texts)
        except EncoderError as exc:
            log.warning("encoder failed (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
