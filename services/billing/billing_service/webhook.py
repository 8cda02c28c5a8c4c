"""Webhook verification and parsing.

The provider signs the raw request body with HMAC-SHA256 and sends
``X-Signature: sha256=<hex digest>``. The body is a JSON object
``{"id": "<event id>", "type": "<event type>", "data": {...}}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from saaschat.config import Secret

SIGNATURE_HEADER = "X-Signature"
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

SUBSCRIPTION_EVENTS = {
    "subscription.created": "active",
    "subscription.updated": None,  # status taken from the event
    "subscription.canceled": "canceled",
}
STATUSES = {"active", "trialing", "past_due", "canceled"}


class InvalidEvent(ValueError):
    pass


def sign(body: bytes, secret: Secret) -> str:
    digest = hmac.new(secret.reveal().encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(body: bytes, header: str | None, secret: Secret) -> bool:
    """Constant-time check of ``header`` against the HMAC of the raw ``body``."""
    if not header:
        return False
    match = _SIGNATURE.match(header.strip())
    if not match:
        return False
    expected = hmac.new(secret.reveal().encode("utf-8"), body, hashlib.sha256).digest()
    return hmac.compare_digest(expected, bytes.fromhex(match.group(1)))


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    data: dict[str, Any]
    raw: dict[str, Any]


@dataclass(frozen=True)
class SubscriptionChange:
    customer_id: str
    plan_id: str
    status: str


def parse_event(body: bytes) -> WebhookEvent:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidEvent("body must be JSON") from None
    if not isinstance(payload, dict):
        raise InvalidEvent("body must be a JSON object")
    event_id, event_type = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
        raise InvalidEvent("id must be 1-128 letters, digits or _.:-")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 100:
        raise InvalidEvent("type must be a non-empty string")
    data = payload.get("data", {})
    if not isinstance(data, dict):
        raise InvalidEvent("data must be an object")
    return WebhookEvent(event_id, event_type, data, payload)


def subscription_change(event: WebhookEvent) -> SubscriptionChange | None:
    """The subscription state an event sets, or None for event types without effect."""
    if event.type not in SUBSCRIPTION_EVENTS:
        return None
    customer, plan = event.data.get("customer_id"), event.data.get("plan_id")
    if not isinstance(customer, str) or not customer or len(customer) > 128:
        raise InvalidEvent("data.customer_id must be a non-empty string")
    if not isinstance(plan, str) or not plan or len(plan) > 64:
        raise InvalidEvent("data.plan_id must be a non-empty string")
    status = SUBSCRIPTION_EVENTS[event.type] or event.data.get("status")
    if status not in STATUSES:
        raise InvalidEvent(f"data.status must be one of {sorted(STATUSES)}")
    return SubscriptionChange(customer, plan, status)
