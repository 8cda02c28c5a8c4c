"""Webhook notifications: the message text, and a receiver that is down is only a warning.

Slack itself cannot be reached from here; the integration tests post to a local HTTP receiver.
"""

from __future__ import annotations

import json

from deploysuite.config.layers import load_config
from deploysuite.core.events import Events
from deploysuite.core.masking import Masker
from deploysuite.core.notify import deploy_text, payload, send


def test_texts_say_what_happened_to_which_environment():
    assert deploy_text("staging", "r2", "deployed", "r1", "", ["auth"]) == (
        ":white_check_mark: staging: release r2 deployed (changed: auth)"
    )
    text = deploy_text("staging", "r3", "rolled back", "r2", "auth: not healthy", [])
    assert "release r3 failed and was rolled back to r2" in text and "> auth: not healthy" in text
    assert "rolled back from r3 to r2" in deploy_text("prod", "r2", "rolled back to", "r3", "", [])


def test_the_payload_is_slack_compatible_json():
    assert json.loads(payload("hi")) == {"text": "hi"}


def test_an_unreachable_webhook_is_a_warning_that_does_not_show_the_url(capsys):
    url = "http://127.0.0.1:9/hooks/SECRET-TOKEN"
    config = load_config("local", cli={"NOTIFY_WEBHOOK_URL": url})
    masker = Masker()
    masker.add(url)
    assert send(config, Events(masker=masker), masker, "hello") is False
    err = capsys.readouterr().err
    assert "warning: the notification webhook failed" in err and "SECRET-TOKEN" not in err


def test_no_webhook_configured_sends_nothing():
    assert send(load_config("local"), Events(), Masker(), "hello") is False
