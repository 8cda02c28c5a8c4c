"""Publishing jobs to RabbitMQ: persistent messages, durable queue, publisher confirms."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Protocol

import aio_pika

from orchestrator_service.jobs import EmailJob
from saaschat.amqp import ATTEMPT_HEADER, EMAIL_QUEUE, AmqpClient
from saaschat.breaker import CircuitBreaker, CircuitOpenError
from saaschat.errors import DependencyUnavailable

PUBLISH_TIMEOUT = 5.0


class JobPublisher(Protocol):
    async def publish(self, job: EmailJob) -> None: ...


def build_message(job: EmailJob) -> aio_pika.Message:
    return aio_pika.Message(
        body=job.encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=job.job_id,
        timestamp=dt.datetime.now(dt.UTC),
        type="email",
        headers={ATTEMPT_HEADER: 1},
    )


class AmqpJobPublisher:
    def __init__(self, amqp: AmqpClient, breaker: CircuitBreaker) -> None:
        self.amqp = amqp
        self.breaker = breaker

    async def publish(self, job: EmailJob) -> None:
        """Returns once the broker confirmed the message (persisted, routed to the queue)."""
        if not self.amqp.is_connected():
            raise DependencyUnavailable("rabbitmq", "not connected")
        channel = self.amqp.channel

        async def send() -> None:
            await asyncio.wait_for(
                channel.default_exchange.publish(
                    build_message(job), routing_key=EMAIL_QUEUE, mandatory=True
                ),
                PUBLISH_TIMEOUT,
            )

        try:
            await self.breaker.call(send)
        except CircuitOpenError as exc:
            raise DependencyUnavailable("rabbitmq", "circuit open", exc.retry_after) from None
        except Exception as exc:
            raise DependencyUnavailable("rabbitmq", exc.__class__.__name__) from exc
