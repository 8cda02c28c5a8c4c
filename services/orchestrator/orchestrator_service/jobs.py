"""Job requests accepted by the orchestrator: the shared email job contract (saaschat.jobs)."""

from saaschat.jobs import MAX_BODY, MAX_SUBJECT, EmailJob, InvalidJob
from saaschat.jobs import job_from_request as parse_job

__all__ = ["MAX_BODY", "MAX_SUBJECT", "EmailJob", "InvalidJob", "parse_job"]
