"""Preparation: a delivery becomes a job ready to run, or the outcome of a message that cannot run.

Decoding (with the routing rules for foreign messages), the job's look-up, payload validation and
idempotency-key derivation; and, per job type, its retry policy and timeout. Whatever these raise is
the message's fault and dead-letters it with the stage's reason (a ``MemoryError`` excepted: it is
raised on, and retried); an unknown job type is retried, since a rolling deploy may bring its handler.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import NamedTuple

from cloudjobs.backends.base import Delivery, QueueInfo
from cloudjobs.clock import Clock, SystemClock
from cloudjobs.definition import JobDefinition
from cloudjobs.envelope import ID_ATTRIBUTE, MAX_IDEMPOTENCY_KEY_LENGTH, TYPE_ATTRIBUTE
from cloudjobs.errors import DecodeError, MessageError, PayloadMissingError, UnknownJobError
from cloudjobs.failures import dead_letter_of, failure_outcome
from cloudjobs.hops import hop
from cloudjobs.job import build_job
from cloudjobs.outcomes import Outcome, Reason
from cloudjobs.payloads.pointer import Pointer, is_pointer_message, read_pointer, with_overrides
from cloudjobs.payloads.resolve import IsCompleted, Stored, missing_body_outcome, read_stored
from cloudjobs.payloads.store import PayloadStore
from cloudjobs.retry import RetryPolicy
from cloudjobs.routing import attribute_of, decode_delivery
from cloudjobs.run import Prepared, Run, build_prepared
from cloudjobs.settings import SettingsModel

logger = logging.getLogger("cloudjobs.consumer")


class _JobRules(NamedTuple):
    """A job type's retry policy, handler timeout, whether its runs keep a record, whether its
    payload is validated (not for an unannotated, ``Any`` or ``object`` payload), and whether its
    idempotency key may be other than the producer's (a key function, or a record to keep)."""

    policy: RetryPolicy
    timeout: timedelta
    keeps_record: bool
    checks_payload: bool
    derives_key: bool


class Preparation:
    """Prepares deliveries for one registry and queue.

    Args:
        registry: job type → definition.
        settings: defaults for attempts, timeouts, backoff and foreign-message routing.
        queue: the queue's configuration (its maxReceiveCount bounds the attempts).
        random: source of jitter in ``[0, 1)`` (injectable for tests).
        clock: the time a job's due time is compared with (see :mod:`cloudjobs.hops`).
        payloads: where the bodies of pointer messages are read (see :mod:`cloudjobs.payloads`).
        is_completed: with bodies deleted after completion, whether a job's record says it
            completed (a pointer whose body is gone is then acknowledged, not dead-lettered).
    """

    def __init__(
        self,
        *,
        registry: Mapping[str, JobDefinition],
        settings: SettingsModel,
        queue: QueueInfo,
        random: Callable[[], float] | None = None,
        clock: Clock | None = None,
        payloads: PayloadStore | None = None,
        is_completed: IsCompleted | None = None,
    ) -> None:
        self._payloads = payloads
        self._is_completed = is_completed
        self._clock: Clock = clock or SystemClock()
        self._registry = registry
        self._settings = settings
        self._queue = queue
        self._default_timeout = settings.job_timeout
        extra = {} if random is None else {"random": random}
        self.default_policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base=timedelta(seconds=settings.backoff_base_seconds),
            cap=timedelta(seconds=settings.backoff_cap_seconds),
            **extra,
        )
        # What prepare() needs of each job type, worked out once rather than for every message.
        self._rules: dict[str, _JobRules] = {}
        for definition in registry.values():
            policy = definition.retry or RetryPolicy(
                max_attempts=definition.max_attempts or settings.max_attempts,
                base=self.default_policy.base,
                cap=self.default_policy.cap,
                random=self.default_policy.random,
            )
            self._rules[definition.name] = _JobRules(
                policy,
                self.timeout_of(definition),
                keeps_record=definition.has_record,
                checks_payload=definition.validates_payload,
                derives_key=definition.key_function is not None or definition.has_record,
            )
            if queue.max_receive_count is not None and policy.max_attempts > queue.max_receive_count:
                logger.warning(
                    "job %r allows %d attempts but queue %r redrives after %d receives: "
                    "it will be dead-lettered (reason max_receives) after %d attempts",
                    definition.name,
                    policy.max_attempts,
                    queue.name,
                    queue.max_receive_count,
                    queue.max_receive_count,
                )

    def _read_stored(self, delivery: Delivery, pointer: Pointer) -> Stored | Outcome:
        """A pointer message's stored body, or the outcome when it cannot be read: acknowledged (its
        body deleted after it completed), dead-lettered (``payload_missing``, or not text), or
        retried with backoff (the store failed)."""
        job_type, job_id = attribute_of(delivery, TYPE_ATTRIBUTE), attribute_of(delivery, ID_ATTRIBUTE)
        if self._payloads is None:
            error: Exception = PayloadMissingError(
                f"the body is stored at s3://{pointer.bucket}/{pointer.key} and no payload store is "
                "configured (set CLOUDJOBS_PAYLOAD_BUCKET)",
                bucket=pointer.bucket,
                key=pointer.key,
            )
            return dead_letter_of(
                error, Reason.PAYLOAD_MISSING, delivery.receive_count, job_type, job_id=job_id
            )
        try:
            return read_stored(self._payloads, pointer)
        except MemoryError:
            raise
        except PayloadMissingError as exc:
            acknowledged = missing_body_outcome(job_id, self._is_completed)
            if acknowledged is not None:
                return acknowledged
            return dead_letter_of(
                exc,
                Reason.PAYLOAD_MISSING,
                delivery.receive_count,
                job_type,
                job_id=job_id,
                is_message_error=True,
            )
        except UnicodeDecodeError as exc:
            return dead_letter_of(
                exc, Reason.MALFORMED_ENVELOPE, delivery.receive_count, job_type, job_id=job_id
            )
        except Exception as exc:
            return failure_outcome(
                delivery,
                exc,
                job_type=job_type,
                attempt=delivery.receive_count,
                policy=self.default_policy,
                max_receive_count=self._queue.max_receive_count,
                job_id=job_id,
            )

    def timeout_of(self, definition: JobDefinition) -> timedelta:
        """The time limit of a job's handler."""
        return definition.timeout or self._default_timeout

    def prepare(self, run: Run) -> Prepared | Outcome:
        """Decode, look up and validate: a message that cannot run as it is gets its dead letter.

        Whatever decoding, validation or key derivation raises is the message's fault (a typed
        :class:`MessageError`, or anything else a hostile body provokes: ``RecursionError``,
        ``KeyError``...) and dead-letters it with the stage's reason; only a ``MemoryError`` is not,
        and is retried.
        """
        delivery = run.delivery
        stored: Stored | None = None
        # pointer_of(delivery), one call fewer for the common message whose body is its own.
        if is_pointer_message(delivery) and (pointer := read_pointer(delivery.body)) is not None:
            read = self._read_stored(delivery, pointer)
            if not isinstance(read, Stored):
                return read
            stored = read
        try:
            if stored is None:
                envelope = decode_delivery(delivery, self._settings)
            else:
                # Decoded from the stored body; the delivery itself keeps its pointer, which every
                # copy of it (hops, re-sends, dead letters) carries on.
                stored_delivery = dataclasses.replace(delivery, body=stored.body)
                envelope = with_overrides(decode_delivery(stored_delivery, self._settings), delivery)
        except MemoryError:
            raise
        except Exception as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else Reason.MALFORMED_ENVELOPE
            job_type = attribute_of(delivery, TYPE_ATTRIBUTE)
            return dead_letter_of(
                exc, reason, delivery.receive_count, job_type, is_message_error=isinstance(exc, DecodeError)
            )
        if envelope.due_at is not None:
            # Delayed past 15 minutes: not due yet is not an attempt (see cloudjobs.hops).
            deferred = hop(delivery, envelope, self._queue, self._clock.now(), longest=self._settings.hop)
            if deferred is not None:
                return deferred
        attempt = max(1, delivery.receive_count - envelope.attempt_offset)
        definition = self._registry.get(envelope.type)
        if definition is None:
            # A rolling deploy may bring the handler: retry with backoff, dead-letter at the end.
            error = UnknownJobError(job_name=envelope.type)
            return failure_outcome(
                delivery,
                error,
                job_type=envelope.type,
                attempt=attempt,
                policy=self.default_policy,
                max_receive_count=self._queue.max_receive_count,
                exhausted=error.reason,
                job_id=envelope.id,
            )
        policy, timeout, keeps_record, checks_payload, derives_key = self._rules[definition.name]
        try:
            payload = definition.validate(envelope.payload) if checks_payload else envelope.payload
        except MemoryError:
            raise
        except Exception as exc:
            invalid = exc.reason if isinstance(exc, MessageError) else Reason.INVALID_PAYLOAD
            return dead_letter_of(
                exc,
                invalid,
                attempt,
                envelope.type,
                job_id=envelope.id,
                is_message_error=isinstance(exc, MessageError),
            )
        try:
            key = (
                definition.idempotency_key_of(
                    job_id=envelope.id, producer_key=envelope.idempotency_key, payload=payload
                )
                if derives_key
                else envelope.idempotency_key
            )
            if key is None and envelope.track_status:
                key = envelope.id  # tracked for this enqueue alone: the record is the job's own
        except MemoryError:
            raise
        except Exception as exc:
            return dead_letter_of(
                exc, Reason.INVALID_IDEMPOTENCY_KEY, attempt, envelope.type, job_id=envelope.id
            )
        if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            too_long = ValueError(
                f"the idempotency key is {len(key)} characters, at most {MAX_IDEMPOTENCY_KEY_LENGTH}"
            )
            return dead_letter_of(
                too_long, Reason.INVALID_IDEMPOTENCY_KEY, attempt, envelope.type, job_id=envelope.id
            )
        job = build_job(  # positional: keywords cost a quarter of the call
            envelope.id,  # id
            envelope.type,  # type
            attempt,
            policy.max_attempts,
            envelope.enqueued_at,
            envelope.correlation_id,
            delivery.queue,
            timeout,
            key,  # idempotency_key
            delivery,  # message
            envelope,
            run.record_progress if keeps_record or envelope.track_status else None,  # progress_reporter
        )
        return build_prepared(delivery, envelope, definition, payload, job, policy)
