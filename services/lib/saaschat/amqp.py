"""RabbitMQ: connection manager and the email job topology shared by orchestrator and worker.

Topology (all durable, declared identically by both sides):

    email.jobs        work queue; rejected messages dead-letter to email.jobs.dlq
    email.jobs.retry  no consumers; each message carries a per-message TTL (the backoff delay)
                      and dead-letters back to email.jobs when it expires
    email.jobs.dlq    messages that exhausted their attempts or can never succeed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from saaschat.config import RabbitSettings

log = logging.getLogger("saaschat.amqp")

EMAIL_QUEUE = "email.jobs"
EMAIL_RETRY_QUEUE = "email.jobs.retry"
EMAIL_DLQ = "email.jobs.dlq"
ATTEMPT_HEADER = "x-attempt"


async def declare_email_topology(channel: AbstractChannel) -> None:
    await channel.declare_queue(EMAIL_DLQ, durable=True)
    await channel.declare_queue(
        EMAIL_QUEUE,
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": EMAIL_DLQ},
    )
    await channel.declare_queue(
        EMAIL_RETRY_QUEUE,
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": EMAIL_QUEUE},
    )


class AmqpClient:
    """A robust connection and one confirming channel, (re)established in the background.

    The service starts even when RabbitMQ is down; readiness reports it until the connection
    is up, and aio-pika restores connection, channel, queues and consumers after an outage.
    """

    name = "rabbitmq"

    def __init__(
        self,
        settings: RabbitSettings,
        *,
        client_name: str,
        prefetch: int = 0,
        on_channel: Callable[[AbstractChannel], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.client_name = client_name
        self.prefetch = prefetch
        self.on_channel = on_channel
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def is_connected(self) -> bool:
        return (
            self.connection is not None
            and self.connection.connected.is_set()
            and not self.connection.is_closed
            and self.channel is not None
            and not self.channel.is_closed
        )

    async def ping(self) -> None:
        if not self.is_connected():
            raise ConnectionError("no open connection and channel to RabbitMQ")

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return self.is_connected()

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_loop(), name="amqp-connect")

    async def _connect_once(self) -> None:
        s = self.settings
        connection = await aio_pika.connect_robust(
            host=s.host,
            port=s.port,
            login=s.user,
            password=s.password.reveal(),
            virtualhost=s.vhost,
            timeout=5,
            client_properties={"connection_name": self.client_name},
            heartbeat=s.heartbeat,
            reconnect_interval=2,
        )
        try:
            channel = await connection.channel(publisher_confirms=True)
            if self.prefetch:
                await channel.set_qos(prefetch_count=self.prefetch)
            await declare_email_topology(channel)
            if self.on_channel is not None:
                await self.on_channel(channel)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        connection.reconnect_callbacks.add(self._on_reconnect)
        self.connection, self.channel = connection, channel

    async def _connect_loop(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._connect_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "rabbitmq not reachable, retrying",
                    extra={
                        "target": self.settings.describe(),
                        "error": exc.__class__.__name__,
                        "retry_in": delay,
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
                continue
            log.info("rabbitmq connected", extra={"target": self.settings.describe()})
            self._ready.set()
            return

    def _on_reconnect(self, *_: object) -> None:
        log.info("rabbitmq reconnected", extra={"target": self.settings.describe()})

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 5)
        self.connection = None
        self.channel = None
