"""Notice templates: the shipped zh-CN and en texts of each channel, the sandbox, and the file:line
problems check-config prints for a template with a syntax error or an unknown field."""

from __future__ import annotations

import pytest

from alerts.notice_text import (
    CHANNEL_PARTS,
    LANGUAGES,
    Renderer,
    TemplateProblem,
    compile_source,
    render,
)
from alerts.sinks.channels import SAMPLE_PAYLOAD, check_templates

FIRING = {**SAMPLE_PAYLOAD, "transition": "firing", "duration_s": 4000.0}


@pytest.mark.parametrize("channel", ["wecom", "dingtalk", "email", "sms"])
def test_zh_cn_says_severity_rule_site_value_limit_since_and_link(channel):
    parts = Renderer(channel, "zh-CN", console_url="https://ops.example/c/").render(FIRING, "林工")
    text = "\n".join(parts.values())
    for expected in ("红色告警", "燃气压力超高", "示例站点", "412.5", "400", "kPa", "2026-01-01 08:00",
                     "https://ops.example/c/alerts/TEST.sample"):
        assert expected in text, (channel, expected)
    if channel != "sms":
        assert "厦门市思明区示例路1号" in text and "1小时6分钟" in text and "林工" in text


@pytest.mark.parametrize("channel", ["wecom", "dingtalk", "email", "sms"])
def test_en_says_the_same_in_english(channel):
    text = "\n".join(Renderer(channel, "en").render(FIRING).values())
    assert "Red Alert" in text and "Gas pressure very high" in text and "412.5" in text
    assert "https://" not in text  # no console_url: no link


@pytest.mark.parametrize("lang, resolved, escalated", [("zh-CN", "已恢复", "升级"), ("en", "Resolved", "Escalated")])
def test_resolved_and_escalated_notices_say_so(lang, resolved, escalated):
    for channel in ("wecom", "dingtalk", "email", "sms"):
        r = Renderer(channel, lang)
        assert resolved in "\n".join(r.render({**FIRING, "transition": "resolved"}).values())
        esc = "\n".join(r.render({**FIRING, "transition": "escalated", "escalation_name": "section_chief"}).values())
        assert escalated in esc


def test_html_part_escapes_site_names():
    parts = Renderer("email", "zh-CN").render({**FIRING, "site": {**FIRING["site"], "name": "<script>x</script>"}})
    assert "<script>" not in parts["email_html"] and "&lt;script&gt;" in parts["email_html"]
    assert "<script>x</script>" in parts["email_text"]


@pytest.mark.parametrize("source", [
    "{{ site_name.__class__.__mro__ }}",
    "{{ site_name.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ site_name.format.__globals__ }}",
])
def test_sandbox_refuses_attribute_tricks(source):
    t = compile_source(source, "evil.j2")
    with pytest.raises(TemplateProblem, match="undefined|sandbox"):  # a plain Environment would render it
        render(t, Renderer("sms").values(FIRING))


def test_unknown_field_is_named_with_its_line():
    with pytest.raises(TemplateProblem) as exc:
        compile_source("line one\n{{ site_name }}\n{{ sitename }}\n", "my.j2")
    assert exc.value.where == "my.j2:3"
    assert "unknown field 'sitename'" in exc.value.message


def test_syntax_error_is_named_with_its_line():
    with pytest.raises(TemplateProblem) as exc:
        compile_source("ok\n{% if severity %}\nno end\n", "my.j2")
    assert exc.value.where.startswith("my.j2:") and "template syntax error" in exc.value.message


def test_loop_variables_are_not_unknown_fields():
    t = compile_source("{% for c in [site_name, district] %}{{ c }};{% endfor %}", "ok.j2")
    assert render(t, Renderer("sms").values(FIRING)) == "示例站点;思明区;"


def test_every_shipped_template_exists_and_renders():
    for channel in CHANNEL_PARTS:
        for lang in LANGUAGES:
            assert all(Renderer(channel, lang).render(FIRING).values())


def test_check_templates_reports_a_bad_custom_template(tmp_path):
    from tests.unit.alerts.helpers import make_cfg

    bad = tmp_path / "wecom.j2"
    bad.write_text("### {{ rule_name }}\n> {{ sevrity_word }}\n")
    cfg = make_cfg({"sinks": {"wc": {"type": "wecom", "key_env": "K", "template": str(bad)},
                              "hook": {"type": "webhook", "url": "http://127.0.0.1:9/x",
                                       "body_template": '{"text": {{ text | tojson }}, "x": {{ nope }}}'}},
                    "route": {"receivers": ["wc"]}})
    problems = [str(p) for p in check_templates(cfg)]
    assert any(p.startswith(f"{bad}:2: unknown field 'sevrity_word'") for p in problems), problems
    assert any("alerting.sinks.hook.body_template: unknown field 'nope'" in p for p in problems), problems
    assert len(problems) == 2
