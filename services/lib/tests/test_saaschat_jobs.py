import json

import pytest

from saaschat.jobs import InvalidJob, decode_job, job_from_request

REQUEST = {"type": "email", "to": "Ana@Example.com", "subject": " Hi ", "body": "text"}


def test_what_the_producer_encodes_the_consumer_decodes():
    job = job_from_request(REQUEST, job_id="abc123")
    assert decode_job(job.encode()) == job
    assert (job.to, job.subject) == ("ana@example.com", "Hi")


@pytest.mark.parametrize(
    "change",
    [{"type": "sms"}, {"to": "nope"}, {"subject": "a\nBcc: x@y.z"}, {"subject": ""},
     {"subject": "x" * 201}, {"body": 5}],
)  # fmt: skip
def test_both_sides_refuse_the_same_bad_jobs(change):
    with pytest.raises(InvalidJob):
        job_from_request({**REQUEST, **change})
    message = json.dumps({**REQUEST, "job_id": "j1", **change}).encode()
    with pytest.raises(InvalidJob):
        decode_job(message)


def test_consumer_refuses_what_only_a_queue_can_carry():
    for raw in (b"not json", b"[1]", json.dumps({**REQUEST}).encode(),
                json.dumps({**REQUEST, "job_id": "x" * 65}).encode()):  # fmt: skip
        with pytest.raises(InvalidJob):
            decode_job(raw)
