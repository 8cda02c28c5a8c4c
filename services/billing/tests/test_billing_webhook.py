import json

import pytest

from billing_service.webhook import (
    InvalidEvent,
    parse_event,
    sign,
    subscription_change,
    verify_signature,
)
from saaschat.config import Secret

SECRET = Secret("whsec_0123456789abcdef")
BODY = b'{"id":"evt_1","type":"subscription.created","data":{"customer_id":"c1","plan_id":"pro"}}'


def test_signature_round_trip():
    header = sign(BODY, SECRET)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(BODY, header, SECRET)
    assert verify_signature(BODY, header.upper().replace("SHA256=", "sha256="), SECRET)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 64,
        "sha256=" + "z" * 64,
        sign(BODY, Secret("another-secret-value")),
        sign(BODY + b" ", SECRET),
    ],
)
def test_bad_signatures_are_rejected(header):
    assert verify_signature(BODY, header, SECRET) is False


def test_any_change_to_the_body_breaks_the_signature():
    header = sign(BODY, SECRET)
    assert not verify_signature(BODY.replace(b"pro", b"team"), header, SECRET)


def test_parse_event_and_subscription_change():
    event = parse_event(BODY)
    assert (event.id, event.type) == ("evt_1", "subscription.created")
    change = subscription_change(event)
    assert (change.customer_id, change.plan_id, change.status) == ("c1", "pro", "active")
    updated = parse_event(
        json.dumps(
            {
                "id": "e2",
                "type": "subscription.updated",
                "data": {"customer_id": "c1", "plan_id": "team", "status": "past_due"},
            }
        ).encode()
    )
    assert subscription_change(updated).status == "past_due"
    other = parse_event(b'{"id": "e3", "type": "invoice.paid", "data": {}}')
    assert subscription_change(other) is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"type": "x"}',
        b'{"id": "has space", "type": "x"}',
        b'{"id": "e", "type": ""}',
        b'{"id": "e", "type": "x", "data": []}',
    ],
)
def test_malformed_events(body):
    with pytest.raises(InvalidEvent):
        parse_event(body)


def test_subscription_event_without_plan_is_invalid():
    with pytest.raises(InvalidEvent, match="plan_id"):
        subscription_change(
            parse_event(b'{"id":"e","type":"subscription.created","data":{"customer_id":"c"}}')
        )
