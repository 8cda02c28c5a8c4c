"""Consuming email jobs: deliver, retry with backoff, dead-letter.

A message is acknowledged only after the SMTP server accepted the mail, or after its retry
(or dead-letter) copy was confirmed by the broker; if even that fails it is nacked back onto
the queue. While the SMTP circuit breaker is open, jobs are parked in the retry queue until
it may close again, without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from email_worker.retry import DEAD_LETTER, attempt_of, decide
from email_worker.settings import RetrySettings
from email_worker.smtp import build_email, is_permanent
from saaschat.amqp import ATTEMPT_HEADER, EMAIL_DLQ, EMAIL_QUEUE, EMAIL_RETRY_QUEUE
from saaschat.breaker import CircuitBreaker, CircuitOpenError
from saaschat.jobs import InvalidJob
from saaschat.jobs import decode_job as parse_job
from saaschat.metrics import Registry

log = logging.getLogger("email_worker")


class IncomingMessage(Protocol):
    body: bytes
    headers: Mapping[str, Any]
    message_id: str | None

    async def ack(self) -> None: ...
    async def nack(self, requeue: bool = True) -> None: ...


class Outbox(Protocol):
    async def retry(self, body: bytes, headers: dict[str, Any], delay: float) -> None: ...
    async def dead_letter(self, body: bytes, headers: dict[str, Any]) -> None: ...


class Sender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


@dataclass
class Outcome:
    result: str  # delivered | retried | parked | dead_lettered | requeued
    attempt: int
    delay: float = 0.0


class AmqpOutbox:
    """Retry and dead-letter copies, persistent and confirmed by the broker."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel

    async def _publish(self, routing_key: str, message: aio_pika.Message) -> None:
        await asyncio.wait_for(
            self.channel.default_exchange.publish(message, routing_key=routing_key, mandatory=True),
            10,
        )

    async def retry(self, body: bytes, headers: dict[str, Any], delay: float) -> None:
        message = aio_pika.Message(
            body=body,
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            expiration=max(0.001, delay),
        )
        await self._publish(EMAIL_RETRY_QUEUE, message)

    async def dead_letter(self, body: bytes, headers: dict[str, Any]) -> None:
        message = aio_pika.Message(
            body=body,
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._publish(EMAIL_DLQ, message)


class EmailProcessor:
    def __init__(
        self,
        sender: Sender,
        breaker: CircuitBreaker,
        retry: RetrySettings,
        from_address: str,
        metrics: Registry,
    ) -> None:
        self.sender = sender
        self.breaker = breaker
        self.retry = retry
        self.from_address = from_address
        self.deliveries = metrics.counter(
            "email_deliveries_total",
            "Email job outcomes: delivered, retried, parked, dead_lettered, requeued.",
            ("result",),
        )
        self.duration = metrics.histogram(
            "email_smtp_duration_seconds", "Time for the SMTP server to accept a mail."
        )

    async def process(self, message: IncomingMessage, outbox: Outbox) -> Outcome:
        attempt = attempt_of(message.headers)
        outcome = await self._process(message, outbox, attempt)
        self.deliveries.inc(result=outcome.result)
        return outcome

    async def _process(self, message: IncomingMessage, outbox: Outbox, attempt: int) -> Outcome:
        try:
            job = parse_job(message.body)
        except InvalidJob as exc:
            log.warning(
                "malformed email job dead-lettered",
                extra={"message_id": message.message_id, "error": str(exc)},
            )
            return await self._dead_letter(message, outbox, attempt, f"invalid job: {exc}")

        started = time.perf_counter()
        try:
            await self.breaker.call(
                lambda: self.sender.send(build_email(job, self.from_address)),
                is_failure=lambda exc: not is_permanent(exc),
            )
        except CircuitOpenError as exc:
            delay = max(1.0, exc.retry_after)
            log.info(
                "smtp circuit open; job parked without spending an attempt",
                extra={"job_id": job.job_id, "attempt": attempt, "retry_in": round(delay, 2)},
            )
            return await self._forward(
                message, outbox, attempt, delay, attempt, "smtp circuit open", "parked", job.job_id
            )
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:500]
            decision = decide(
                attempt,
                permanent=is_permanent(exc),
                max_attempts=self.retry.max_attempts,
                base=self.retry.base_seconds,
                cap=self.retry.max_seconds,
            )
            if decision.action == DEAD_LETTER:
                log.warning(
                    "email job dead-lettered",
                    extra={"job_id": job.job_id, "attempt": attempt, "error": error},
                )
                return await self._dead_letter(message, outbox, attempt, error)
            log.info(
                "email delivery failed, will retry",
                extra={
                    "job_id": job.job_id,
                    "attempt": attempt,
                    "retry_in": decision.delay,
                    "error": error,
                },
            )
            return await self._forward(
                message,
                outbox,
                decision.next_attempt,
                decision.delay,
                attempt,
                error,
                "retried",
                job.job_id,
            )
        self.duration.observe(time.perf_counter() - started)
        await message.ack()
        log.info("email delivered", extra={"job_id": job.job_id, "attempt": attempt})
        return Outcome("delivered", attempt)

    async def _forward(
        self,
        message: IncomingMessage,
        outbox: Outbox,
        next_attempt: int,
        delay: float,
        attempt: int,
        error: str,
        result: str,
        job_id: str,
    ) -> Outcome:
        headers = dict(message.headers or {})
        headers[ATTEMPT_HEADER] = next_attempt
        headers["x-last-error"] = error
        try:
            await outbox.retry(message.body, headers, delay)
        except Exception as exc:
            log.warning(
                "could not schedule retry; message requeued",
                extra={"job_id": job_id, "error": exc.__class__.__name__},
            )
            await message.nack(requeue=True)
            return Outcome("requeued", attempt)
        await message.ack()
        return Outcome(result, attempt, delay)

    async def _dead_letter(
        self, message: IncomingMessage, outbox: Outbox, attempt: int, error: str
    ) -> Outcome:
        headers = dict(message.headers or {})
        headers["x-attempts"] = attempt
        headers["x-last-error"] = error
        headers["x-dead-lettered-at"] = int(time.time())
        try:
            await outbox.dead_letter(message.body, headers)
        except Exception as exc:
            log.warning(
                "could not dead-letter; message requeued", extra={"error": exc.__class__.__name__}
            )
            await message.nack(requeue=True)
            return Outcome("requeued", attempt)
        await message.ack()
        return Outcome("dead_lettered", attempt)


class Consumer:
    """Runs the processor on deliveries of the email queue (prefetch 1: one at a time)."""

    def __init__(self, processor: EmailProcessor) -> None:
        self.processor = processor
        self.queue: AbstractQueue | None = None
        self.outbox: AmqpOutbox | None = None
        self.consumer_tag: str | None = None
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0

    async def start(self, channel: AbstractChannel) -> None:
        if self.stopping:
            return
        self.outbox = AmqpOutbox(channel)
        self.queue = await channel.get_queue(EMAIL_QUEUE, ensure=True)
        self.consumer_tag = await self.queue.consume(self._on_message, no_ack=False)
        log.info("consuming", extra={"queue": EMAIL_QUEUE})

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if self.stopping:
            await message.nack(requeue=True)
            return
        self._busy += 1
        self._idle.clear()
        try:
            await self.processor.process(message, self.outbox)
        except Exception:
            log.exception("email job handling failed; message requeued")
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    async def stop(self, timeout: float) -> None:
        """Stop taking deliveries and let the current job finish within ``timeout``; anything
        still unacknowledged afterwards returns to the queue when the channel closes."""
        self.stopping = True
        tag, self.consumer_tag = self.consumer_tag, None
        if self.queue is not None and tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.queue.cancel(tag), 2)
            log.info("stopped consuming", extra={"queue": EMAIL_QUEUE})
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("current email job did not finish in time; it will be redelivered")
