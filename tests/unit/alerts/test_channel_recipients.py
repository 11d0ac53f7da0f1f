"""Channel sinks and team receivers given a person they cannot reach (bugs found by mypy): a clear
SinkError that is not retried, never a send to "None" or a TypeError that the dispatcher retries forever."""

from __future__ import annotations

import pytest

from alerts.model import Notice
from alerts.notice_text import Renderer
from alerts.sinks import build_sinks
from alerts.sinks.base import SinkError
from alerts.sinks.channels import SAMPLE_PAYLOAD
from alerts.sinks.mail import EmailSink
from alerts.sinks.sms import SmsSink
from config.channels import SmsSink as SmsSpec
from config.oncall import OnCall, Person
from tests.unit.alerts.helpers import make_cfg

# Nothing listens on the discard port: a sink that tried to send would fail with a retryable network error.
NOWHERE = "127.0.0.1"
NOTICE = Notice("TEST.sample:1", "TEST.sample", 1, "firing", 1_767_225_600_000_000_000, dict(SAMPLE_PAYLOAD))
NO_CHANNELS = Person.model_validate({"id": "wang", "name": "Wang"})


def test_sms_to_a_person_without_a_number_is_refused_without_sending():
    spec = SmsSpec.model_validate({"type": "sms", "url": f"http://{NOWHERE}:9/sms"})
    sink = SmsSink(spec, Renderer("sms"), None)
    with pytest.raises(SinkError) as info:
        sink.send(NOTICE, NO_CHANNELS)
    assert not info.value.retryable
    assert str(info.value) == "sms sink sms: Wang has no sms number in the roster"


def test_email_to_a_person_without_an_address_is_refused_without_sending():
    sink = EmailSink(NOWHERE, 9, "plain", "alerts@example.org", [], Renderer("email"))
    with pytest.raises(SinkError) as info:
        sink.send(NOTICE, NO_CHANNELS)
    assert not info.value.retryable
    assert str(info.value) == "email sink email: Wang has no email address in the roster"


def _team_cfg(email_sink: str):
    cfg = make_cfg({"sinks": {
        "hook": {"type": "webhook", "url": f"http://{NOWHERE}:9/hook"},
        "mail": {"type": "email", "host": NOWHERE, "port": 9, "security": "plain", "from": "alerts@example.org"},
    }, "route": {"receivers": ["hook"]}})
    oncall = OnCall.model_validate({
        "people": [{"id": "wang", "name": "Wang", "channels": {"email": "wang@example.org"}}],
        "teams": [{"id": "gas", "name": "Gas duty", "sinks": {"email": email_sink},
                   "levels": [{"shifts": [{"window": {"start": "00:00", "end": "23:59"}, "people": ["wang"]}]}]}],
    })
    return cfg.model_copy(update={"oncall": oncall})


def test_a_team_channel_naming_a_sink_of_another_type_is_left_out():
    # check-config reports it (check_roster); the service must still never hand a person to a webhook.
    team = build_sinks(_team_cfg("hook"), {})["team:gas"]
    assert dict(team.sinks) == {}
    with pytest.raises(SinkError) as info:
        team.send(NOTICE)
    assert not info.value.retryable
    assert "none of its channel sinks exists" in str(info.value)


def test_a_team_channel_naming_a_sink_of_its_type_is_kept():
    sinks = build_sinks(_team_cfg("mail"), {})
    assert dict(sinks["team:gas"].sinks) == {"email": sinks["mail"]}
