import aio_pika
import pytest

from orchestrator_service.app import build_app
from orchestrator_service.jobs import InvalidJob, parse_job
from orchestrator_service.publisher import build_message
from saaschat.amqp import ATTEMPT_HEADER
from saaschat.errors import DependencyUnavailable

GOOD = {"type": "email", "to": "Dan@Example.com", "subject": "Welcome", "body": "Hi Dan"}


class FakePublisher:
    def __init__(self):
        self.jobs = []
        self.down = False

    async def publish(self, job):
        if self.down:
            raise DependencyUnavailable("rabbitmq", "not connected")
        self.jobs.append(job)


def test_parse_job_normalises_and_assigns_an_id():
    job = parse_job(GOOD)
    assert (job.to, job.subject, job.body) == ("dan@example.com", "Welcome", "Hi Dan")
    assert len(job.job_id) == 32
    assert parse_job(GOOD).job_id != job.job_id


@pytest.mark.parametrize(
    "change",
    [
        {"type": "sms"},
        {"to": "nobody"},
        {"subject": ""},
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"body": None},
        {"subject": "x" * 201},
    ],
)
def test_invalid_jobs(change):
    with pytest.raises(InvalidJob):
        parse_job({**GOOD, **change})


def test_queue_message_is_persistent_json_with_first_attempt():
    job = parse_job(GOOD, job_id="abc123")
    message = build_message(job)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == "abc123"
    assert message.content_type == "application/json"
    assert message.headers[ATTEMPT_HEADER] == 1
    assert b'"to":"dan@example.com"' in message.body


async def test_create_job_returns_202_and_publishes(service_context, make_client):
    publisher = FakePublisher()
    ctx = service_context()
    client = await make_client(build_app(ctx, publisher))
    resp = await client.post("/api/orchestrator/jobs", json=GOOD)
    assert resp.status == 202
    body = await resp.json()
    assert body["status"] == "queued"
    assert [j.job_id for j in publisher.jobs] == [body["job_id"]]
    assert (await client.post("/api/orchestrator/jobs", json={**GOOD, "to": "x"})).status == 400
    publisher.down = True
    resp = await client.post("/api/orchestrator/jobs", json=GOOD)
    assert resp.status == 503
    assert "Retry-After" in resp.headers
    assert len(publisher.jobs) == 1
    metrics = ctx.metrics.render()
    assert 'orchestrator_jobs_total{type="email",result="queued"} 1' in metrics
    assert 'orchestrator_jobs_total{type="email",result="unavailable"} 1' in metrics
