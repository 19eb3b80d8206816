"""Dead letters: an unusable input message goes to the dead-letter topic with its reason and bytes."""

from __future__ import annotations

import base64
import functools
import logging
import time

from streams.app.batch import Outbox, Record
from streams.contracts import DeadLetter, DecodeError, encode
from streams.metrics import Metrics

log = logging.getLogger(__name__)


class ProcessingError(Exception):
    """The recommender failed on a batch; its events are dead-lettered instead of lost.

    >>> err = ProcessingError(ValueError("boom"))
    >>> err.reason, err.detail
    ('processing_error', 'ValueError: boom')
    """

    #: The dead-letter reason on the wire (docs and the metrics registry name it).
    reason = "processing_error"

    def __init__(self, cause: BaseException) -> None:
        self.detail = f"{type(cause).__name__}: {cause}"
        super().__init__(f"{self.reason}: {self.detail}")


class DeadLetters:
    """Puts dead letters for ``topic`` into a batch's outbox, counted in ``metrics`` once published."""

    def __init__(self, topic: str, metrics: Metrics) -> None:
        self.topic = topic
        self.metrics = metrics

    def add(self, out: Outbox, msg: Record, error: DecodeError | ProcessingError) -> None:
        """Put the dead-letter message for ``msg`` in ``out``, with the batch's lists."""
        record = DeadLetter(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            reason=error.reason,
            detail=error.detail[:1000],
            original_b64=base64.b64encode(msg.value or b"").decode(),
            key_b64=base64.b64encode(msg.key).decode() if msg.key is not None else None,
            failed_at=time.time(),
        )
        log.warning("dead letter from %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, error)
        out.add(msg.tp, self.topic, msg.key, encode(record))
        out.after(msg.tp, functools.partial(self.metrics.dead_letter, error.reason))
