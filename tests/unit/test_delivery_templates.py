"""Templates: refused when saved with the part and line of each problem; rendered or failed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from beacon.deliveries.templates import (
    EventView,
    InvalidTemplate,
    MessageView,
    ProfileView,
    RenderError,
    TemplateVariables,
    parse_template,
    render,
)

ANN = TemplateVariables(
    profile=ProfileView(
        id="p-1",
        traits={"first_name": "Ann <3", "city": None, "tags": ["vip"], "items": "3 items"},
        attributes={"orders_count": 4},
        identities={"email": "ann@example.com"},
    ),
    event=EventView(
        type="PURCHASE",
        id="e-1",
        time=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        properties={"total": 99.5, "product": {"name": "Kettle"}},
    ),
    context={"coupon": "SPRING"},
    message=MessageView(
        id="m-1",
        delivery_id="d-1",
        tag="spring",
        view_online_url="https://links.test/m/view/t?a=1&b=2",
        unsubscribe_url="https://links.test/m/unsubscribe/t",
        one_click_unsubscribe_url="https://links.test/m/unsubscribe-one-click/t",
    ),
)


def problems(raw: Any) -> list[tuple[str, int | None, str]]:
    with pytest.raises(InvalidTemplate) as refused:
        parse_template(raw)
    return [(p.part, p.line, p.type) for p in refused.value.problems]


def sms(source: str) -> dict[str, dict[str, str]]:
    return {"sms": {"text": source}}


def test_an_email_renders_each_part_with_html_escaped_only_in_html() -> None:
    template = parse_template(
        {
            "email": {
                "subject": "{{ profile.traits.first_name }}, your "
                "{{ event.properties.product.name }}",
                "html": "<p>Hi {{ profile.traits.first_name }}</p>"
                '<a href="{{ message.view_online_url }}">view</a>',
                "text": "Total {{ event.properties.total }}, code {{ context.coupon }}",
            }
        }
    )

    rendered = render(template, channel="email", variables=ANN)

    assert rendered.parts == {
        "subject": "Ann <3, your Kettle",
        "html": '<p>Hi Ann &lt;3</p><a href="https://links.test/m/view/t?a=1&amp;b=2">view</a>',
        "text": "Total 99.5, code SPRING",
    }
    assert (rendered.channel, rendered.delivery_id) == ("email", "d-1")
    assert rendered.one_click_unsubscribe_url == "https://links.test/m/unsubscribe-one-click/t"


def test_every_root_and_field_a_template_may_read() -> None:
    template = parse_template(
        sms(
            "{{ profile.id }} {{ profile.identities.email }} {{ profile.attributes.orders_count }}"
            " {{ event.id }} {{ event.type }} {{ event.time }} {{ message.id }}"
            " {{ message.delivery_id }} {{ message.tag }} {{ message.unsubscribe_url }}"
            " {{ profile.traits.items }} {{ profile.traits.tags[0] }}"
        )
    )

    assert render(template, channel="sms", variables=ANN).parts["text"] == (
        "p-1 ann@example.com 4 e-1 PURCHASE 2025-03-01T12:00:00+00:00 m-1 d-1 spring"
        " https://links.test/m/unsubscribe/t 3 items vip"
    )


def test_a_declared_default_fills_a_missing_or_null_value() -> None:
    template = parse_template(
        sms(
            'Hi {{ profile.traits.nickname | default("there") }} from '
            '{{ profile.traits.city | default("your city") }}, '
            '{{ profile.traits.address.street | default("-") }}'
            "{% if profile.traits.vip is defined %}!{% endif %}"
        )
    )

    assert render(template, channel="sms", variables=ANN).parts["text"] == (
        "Hi there from your city, -"
    )


@pytest.mark.parametrize(
    ("source", "missing", "line"),
    [
        ("Hi {{ profile.traits.nickname }}", "profile.traits.nickname", 1),
        ("a\nb\n{{ profile.traits.address.street }}", "profile.traits.address.street", 3),
        ("{{ profile.traits.city }}", "profile.traits.city", 1),
        ("{{ profile.traits.tags[3] }}", "profile.traits.tags[3]", 1),
        ("{{ event.properties.coupon | upper }}", "event.properties.coupon", 1),
        ("{% if profile.traits.vip %}VIP{% endif %}", "profile.traits.vip", 1),
        ('{{ profile.traits["first name"] }}', 'profile.traits["first name"]', 1),
        ("{{ context.cart.items | length }}", "context.cart.items", 1),
    ],
)
def test_a_missing_value_without_a_default_fails_the_render_naming_it(
    source: str, missing: str, line: int
) -> None:
    template = parse_template(sms(source))

    with pytest.raises(RenderError) as failed:
        render(template, channel="sms", variables=ANN)

    assert str(failed.value) == (
        f"sms.text line {line}: {missing} is missing and the template gives it no default"
    )
    assert failed.value.part == "sms.text"


def test_a_message_without_an_event_fails_where_the_template_reads_one() -> None:
    template = parse_template(sms("Your {{ event.properties.product.name }}"))
    without_event = TemplateVariables(profile=ANN.profile, message=ANN.message)

    with pytest.raises(RenderError, match=r"event.properties.product.name is missing"):
        render(template, channel="sms", variables=without_event)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (sms("Hi {{ profile.traits.name"), [("sms.text", 1, "syntax")]),
        (sms("ok\n{% if x %}"), [("sms.text", 2, "syntax")]),
        (sms("{{ profile.traits.name | shout }}"), [("sms.text", 1, "syntax")]),
        (sms("{{ profile.__class__ }}"), [("sms.text", 1, "unsafe")]),
        (sms("\n{{ ''.__class__.__mro__[1].__subclasses__() }}"), [("sms.text", 2, "unsafe")] * 3),
        (sms("{{ profile.traits._secret }}"), [("sms.text", 1, "unsafe")]),
        (sms("{{ profile.traits['__globals__'] }}"), [("sms.text", 1, "unsafe")]),
        (sms("{{ customer.name }}"), [("sms.text", 1, "unknown_variable")]),
        (sms("{{ profile.nmae }}"), [("sms.text", 1, "unknown_field")]),
        (sms("{{ message['body'] }}"), [("sms.text", 1, "unknown_field")]),
        (sms("{% set profile = {} %}"), [("sms.text", 1, "reserved_name")]),
        (sms("{% for event in [1] %}{% endfor %}"), [("sms.text", 1, "reserved_name")]),
        (sms("{% include 'footer.html' %}"), [("sms.text", 1, "not_allowed")]),
        (sms("{% extends 'base.html' %}"), [("sms.text", 1, "not_allowed")]),
        (sms("{% import 'm.html' as m %}"), [("sms.text", 1, "not_allowed")]),
        (sms("{{ lipsum() }}"), [("sms.text", 1, "unknown_variable")]),
        ({"fax": {"text": "hi"}}, [("fax", None, "unknown_channel")]),
        ({"sms": {"text": "hi", "body": "x"}}, [("sms.body", None, "unknown_part")]),
        ({"sms": {"text": 5}}, [("sms.text", None, "malformed")]),
        ({"sms": "hi"}, [("sms", None, "malformed")]),
        ({"push": {"title": "t"}}, [("push.body", None, "missing")]),
        ({"email": {"subject": "s"}}, [("email", None, "missing")]),
        ({"email": {"html": "h"}}, [("email.subject", None, "missing")]),
        ("just text", [("", None, "malformed")]),
        ({}, [("", None, "malformed")]),
    ],
)
def test_bad_templates_are_refused_naming_part_line_and_problem(
    raw: Any, expected: list[tuple[str, int | None, str]]
) -> None:
    assert problems(raw) == expected


def test_every_problem_of_every_part_is_named_at_once() -> None:
    with pytest.raises(InvalidTemplate) as refused:
        parse_template(
            {
                "email": {"subject": "{{ profile.nmae }}", "html": "<p>\n{{ foo }}</p>"},
                "sms": {"text": "{{"},
            }
        )

    assert str(refused.value) == (
        "email.subject line 1: profile has no 'nmae' (it has: id, traits, attributes, "
        "identities); email.html line 2: 'foo' does not exist (a template reads profile, "
        "event, context, message); sms.text line 1: unexpected 'end of template'"
    )
    assert refused.value.problems[0].as_json() == {
        "part": "email.subject",
        "line": 1,
        "type": "unknown_field",
        "msg": "profile has no 'nmae' (it has: id, traits, attributes, identities)",
    }


def test_a_template_keeps_its_sources() -> None:
    raw = {"sms": {"text": "Hi {{ profile.id }}"}, "push": {"title": "T", "body": "B"}}

    assert parse_template(raw).to_json() == raw


def test_the_sandbox_stops_what_gets_past_the_checks() -> None:
    cases = {
        "{{ 'x' * 100000000 }}": "would pass the output limit",
        "{{ 10 ** 1000 }}": "exponents above 64",
        "{% for i in range(100000) %}{{ 'x' * 20 }}{% endfor %}": "passed 1,000,000 characters",
        "{{ profile.traits.tags.append('x') }}": "unsafe",
        "{{ 1 / 0 }}": "division by zero",
        "{{ [None][0] }}": "a null value was written",
    }
    for source, message in cases.items():
        with pytest.raises(RenderError, match=message):
            render(parse_template(sms(source)), channel="sms", variables=ANN)


def test_a_webhook_body_must_render_as_json_and_tojson_keeps_it_so() -> None:
    good = parse_template(
        {
            "webhook": {
                "body": '{"name": {{ profile.traits.first_name | tojson }}, '
                '"tags": {{ profile.traits.tags | tojson }}}'
            }
        }
    )
    bad = parse_template({"webhook": {"body": '{"name": "{{ profile.traits.first_name }}"'}})

    body = render(good, channel="webhook", variables=ANN).parts["body"]
    assert orjson.loads(body) == {"name": "Ann <3", "tags": ["vip"]}
    with pytest.raises(
        RenderError, match=r"webhook.body: is not JSON .* write values with \| tojson"
    ):
        render(bad, channel="webhook", variables=ANN)


def test_rendered_parts_are_checked_for_their_channel() -> None:
    cases = [
        ({"sms": {"text": "{{ context.none | default('') }} "}}, "sms", "sms.text: rendered empty"),
        (
            {"email": {"subject": "a\n{{ context.coupon }}", "text": "t"}},
            "email",
            "email.subject: a subject is one line",
        ),
        (
            {"push": {"title": "t", "body": "b", "url": "{{ context.coupon }}"}},
            "push",
            "push.url: rendered 'SPRING', not an absolute http",
        ),
        ({"sms": {"text": "hi"}}, "email", "email: the template has no email parts"),
    ]
    for raw, channel, message in cases:
        with pytest.raises(RenderError, match=message):
            render(parse_template(raw), channel=channel, variables=ANN)  # type: ignore[arg-type]


def test_a_push_renders_title_body_and_url() -> None:
    template = parse_template(
        {
            "push": {
                "title": "{{ event.properties.product.name }} is back",
                "body": "Use {{ context.coupon }}",
                "url": " https://shop.test/p/kettle ",
            }
        }
    )

    assert render(template, channel="push", variables=ANN).parts == {
        "title": "Kettle is back",
        "body": "Use SPRING",
        "url": "https://shop.test/p/kettle",
    }
