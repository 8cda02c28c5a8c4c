"""HTTP API of the orchestrator service."""

from __future__ import annotations

import logging

from aiohttp import web

from orchestrator_service.jobs import InvalidJob, parse_job
from orchestrator_service.publisher import JobPublisher
from saaschat.app import ServiceContext, create_app, error_response, json_response, read_json_object
from saaschat.errors import DependencyUnavailable

log = logging.getLogger("orchestrator.api")

PUBLISHER = web.AppKey("orchestrator_publisher", object)
METRICS = web.AppKey("orchestrator_metrics", dict)


async def create_job(request: web.Request) -> web.Response:
    counter = request.app[METRICS]["jobs"]
    body = await read_json_object(request)
    try:
        job = parse_job(body)
    except InvalidJob as exc:
        # Bounded label values: arbitrary client input never becomes a time series.
        counter.inc(type="email" if body.get("type") == "email" else "other", result="invalid")
        return error_response(400, str(exc))
    publisher: JobPublisher = request.app[PUBLISHER]
    try:
        await publisher.publish(job)
    except DependencyUnavailable:
        counter.inc(type="email", result="unavailable")
        raise
    counter.inc(type="email", result="queued")
    log.info("job queued", extra={"job_id": job.job_id, "type": "email"})
    return json_response({"job_id": job.job_id, "status": "queued"}, status=202)


def build_app(ctx: ServiceContext, publisher: JobPublisher) -> web.Application:
    app = create_app(ctx, client_max_size=256 * 1024)
    app[PUBLISHER] = publisher
    app[METRICS] = {
        "jobs": ctx.metrics.counter(
            "orchestrator_jobs_total", "Job requests by type and result.", ("type", "result")
        )
    }
    app.router.add_post("/api/orchestrator/jobs", create_job)
    return app
