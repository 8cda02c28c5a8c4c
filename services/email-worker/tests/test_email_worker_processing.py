import json
import smtplib

import pytest

from email_worker.settings import RetrySettings, load_settings, load_smtp
from email_worker.smtp import build_email, is_permanent
from email_worker.worker import EmailProcessor
from saaschat.breaker import CircuitBreaker
from saaschat.config import ConfigError
from saaschat.jobs import InvalidJob
from saaschat.jobs import decode_job as parse_job
from saaschat.metrics import Registry

JOB = {"job_id": "j1", "type": "email", "to": "eve@example.com", "subject": "Hi", "body": "Body"}


class FakeMessage:
    def __init__(self, payload=JOB, attempt=None):
        self.body = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.headers = {} if attempt is None else {"x-attempt": attempt}
        self.message_id = "m1"
        self.acked = False
        self.nacked = None

    async def ack(self):
        self.acked = True

    async def nack(self, requeue=True):
        self.nacked = requeue


class FakeOutbox:
    def __init__(self, fail=False):
        self.retries = []
        self.dead = []
        self.fail = fail

    async def retry(self, body, headers, delay):
        if self.fail:
            raise ConnectionError("broker gone")
        self.retries.append((body, headers, delay))

    async def dead_letter(self, body, headers):
        if self.fail:
            raise ConnectionError("broker gone")
        self.dead.append((body, headers))


class FakeSender:
    def __init__(self, error=None):
        self.error = error
        self.sent = []

    async def send(self, message):
        if self.error is not None:
            raise self.error
        self.sent.append(message)


def processor(sender, threshold=5, max_attempts=3):
    return EmailProcessor(
        sender,
        CircuitBreaker("smtp", failure_threshold=threshold, reset_timeout=30),
        RetrySettings(max_attempts=max_attempts, base_seconds=2, max_seconds=60),
        "no-reply@my-saas-chat.local",
        Registry(),
    )


async def test_delivered_mail_is_acked_after_smtp_accepts():
    sender, outbox, message = FakeSender(), FakeOutbox(), FakeMessage()
    outcome = await processor(sender).process(message, outbox)
    assert outcome.result == "delivered"
    assert message.acked and message.nacked is None
    assert sender.sent[0]["To"] == "eve@example.com"
    assert outbox.retries == outbox.dead == []


async def test_transient_failure_is_retried_with_backoff_and_next_attempt():
    outbox, message = FakeOutbox(), FakeMessage(attempt=2)
    outcome = await processor(FakeSender(ConnectionRefusedError())).process(message, outbox)
    assert outcome.result == "retried"
    body, headers, delay = outbox.retries[0]
    assert body == message.body
    assert headers["x-attempt"] == 3
    assert "ConnectionRefusedError" in headers["x-last-error"]
    assert delay == 4
    assert message.acked  # the retry copy is safely queued


async def test_last_attempt_goes_to_the_dead_letter_queue():
    outbox, message = FakeOutbox(), FakeMessage(attempt=3)
    outcome = await processor(FakeSender(TimeoutError()), max_attempts=3).process(message, outbox)
    assert outcome.result == "dead_lettered"
    assert outbox.retries == []
    assert outbox.dead[0][1]["x-attempts"] == 3
    assert message.acked


async def test_permanent_smtp_rejection_dead_letters_at_once_without_tripping_breaker():
    error = smtplib.SMTPRecipientsRefused({"eve@example.com": (550, b"no such user")})
    proc = processor(FakeSender(error), threshold=1)
    outbox = FakeOutbox()
    outcome = await proc.process(FakeMessage(attempt=1), outbox)
    assert outcome.result == "dead_lettered"
    assert proc.breaker.state == "closed"


async def test_open_breaker_parks_the_job_without_spending_an_attempt():
    proc = processor(FakeSender(ConnectionRefusedError()), threshold=1)
    await proc.process(FakeMessage(attempt=1), FakeOutbox())
    assert proc.breaker.state == "open"
    outbox, message = FakeOutbox(), FakeMessage(attempt=2)
    outcome = await proc.process(message, outbox)
    assert outcome.result == "parked"
    assert outbox.retries[0][1]["x-attempt"] == 2
    assert outbox.retries[0][2] >= 1.0
    assert message.acked


async def test_when_the_retry_copy_cannot_be_queued_the_message_is_requeued():
    message = FakeMessage()
    outcome = await processor(FakeSender(ConnectionRefusedError())).process(
        message, FakeOutbox(fail=True)
    )
    assert outcome.result == "requeued"
    assert message.nacked is True and not message.acked


async def test_malformed_job_is_dead_lettered():
    outbox, message = FakeOutbox(), FakeMessage(payload=b"{oops")
    sender = FakeSender()
    outcome = await processor(sender).process(message, outbox)
    assert outcome.result == "dead_lettered"
    assert "invalid job" in outbox.dead[0][1]["x-last-error"]
    assert sender.sent == []


def test_permanent_error_classification():
    assert is_permanent(smtplib.SMTPDataError(554, b"rejected"))
    assert not is_permanent(smtplib.SMTPDataError(451, b"try later"))
    assert not is_permanent(smtplib.SMTPResponseException(421, b"closing"))
    mixed = smtplib.SMTPRecipientsRefused({"a@x.io": (550, b"no"), "b@x.io": (450, b"busy")})
    assert not is_permanent(mixed)
    assert not is_permanent(ConnectionRefusedError())


def test_job_parsing_and_email_building():
    with pytest.raises(InvalidJob):
        parse_job(json.dumps({**JOB, "subject": "a\nBcc: x@y.z"}).encode())
    with pytest.raises(InvalidJob):
        parse_job(json.dumps({**JOB, "type": "sms"}).encode())
    email = build_email(parse_job(json.dumps(JOB).encode()), "no-reply@my-saas-chat.local")
    assert email["Message-ID"] == "<j1@my-saas-chat.local>"
    assert email["X-Job-ID"] == "j1"
    assert email.get_content().strip() == "Body"


def test_settings_errors_name_the_variables():
    with pytest.raises(ConfigError, match="SMTP_USERNAME and SMTP_PASSWORD"):
        load_smtp({"SMTP_USERNAME": "u"})
    with pytest.raises(ConfigError, match="RABBITMQ_PASSWORD"):
        load_settings({})
    settings = load_settings({"RABBITMQ_PASSWORD": "p"})
    assert (settings.smtp.host, settings.smtp.port) == ("localhost", 25)
    assert settings.retry.max_attempts == 6


async def test_consumer_stop_waits_for_the_current_job_and_takes_no_new_one():
    import asyncio

    from email_worker.worker import Consumer

    gate = asyncio.Event()
    finished = []

    class SlowProcessor:
        async def process(self, message, outbox):
            await gate.wait()
            finished.append(message)

    consumer = Consumer(SlowProcessor())
    current = FakeMessage()
    handling = asyncio.create_task(consumer._on_message(current))
    await asyncio.sleep(0)
    stopping = asyncio.create_task(consumer.stop(timeout=2))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # still waiting for the job in hand
    late = FakeMessage()
    await consumer._on_message(late)
    assert late.nacked is True  # handed back to the queue, not processed
    gate.set()
    await asyncio.wait_for(stopping, 1)
    await handling
    assert finished == [current]
