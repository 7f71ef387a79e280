"""Rendering once per campaign (messages/split.py) gives exactly what rendering whole gives.

The oracle is the full sandboxed render of the same template: every shipped template, built
both ways for many generated contacts (HTML, unicode, CR/LF, NUL, very long values), must give
the same bytes; so must synthetic templates that use the branches, loops, variables and filters
the split has to get right. Templates it cannot prove equal are rendered whole.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError

from mailer.config import Secret, Settings
from mailer.enums import Category
from mailer.errors import TemplateError
from mailer.messages import (
    CampaignInfo,
    CampaignMessages,
    Recipient,
    SenderIdentity,
    list_templates,
    load_template,
)
from mailer.messages.check import SAMPLE_POLICY_PARAMS, sample_params
from mailer.messages.context import (
    SAMPLE_RECIPIENT,
    CampaignView,
    CompanyView,
    LinksView,
    PolicyView,
    SenderView,
    recipient_views,
)
from mailer.messages.environment import compile_source, make_environment, render_budget
from mailer.messages.split import crlf_body, split_source
from mailer.messages.templates import Template
from tests.test_templates import HEADER

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = Settings(
    templates_dir=ROOT / "templates",
    secret_key=Secret("test-secret-0123456789"),
    public_base_url="https://u.cpi.example",
)
SHIPPED = list_templates(SETTINGS)

#: Values a contact record can hold that a template must escape, keep or survive.
HOSTILE = [
    "",
    " ",
    "<script>alert('x')</script>",
    "\"quoted\" & 'single' <b>bold</b>",
    "Zoë Ångström 東京 🎉 ﷽",
    "line\r\nBcc: victim@example.com",
    "cr\ronly\nlf\r\n\r\n",
    "\x00\x1b[31m\x7f\u2028\u2029\u0085",
    "{{ contact.email }}{% if true %}x{% endif %}",
    "=_mailer_0123 --=_mailer_ ==3D=\r\n.\r\n",
    "x" * 5000,
    "é" * 700,
    " ".join(["word"] * 400),
]
text_values = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.builds(
        lambda part, times: part * times, st.text(min_size=1, max_size=4), st.integers(1, 400)
    ),
)
recipients = st.builds(
    Recipient,
    send_id=st.integers(1, 10**9),
    contact_id=st.integers(1, 10**9),
    email=st.sampled_from(["pat@client.example", "josé@bücher.example", "a.b+c@x.example"]),
    first_name=text_values,
    last_name=text_values,
    title=text_values,
    org_name=text_values,
    org_industry=text_values,
    org_employees=st.one_of(st.none(), st.integers(-5, 10**6)),
    org_city=text_values,
    org_state=text_values,
    org_kind=text_values,
    manager_name=text_values,
    manager_email=text_values,
    manager_phone=text_values,
)


def both_ways(name: str, **campaign: Any) -> tuple[CampaignMessages, CampaignMessages]:
    """The campaign's messages rendered once per campaign, and the same rendered whole."""
    template = load_template(SETTINGS, name)
    assert template.html_split and template.text_split and template.subject_split, name
    whole = dataclasses.replace(template, subject_split=None, text_split=None, html_split=None)
    made = []
    for tpl in (template, whole):
        made.append(
            CampaignMessages(
                SETTINGS,
                template=tpl,
                campaign=CampaignInfo(id=3, name="Campaign", category=tpl.category),
                sender=campaign.get("sender") or SenderIdentity("Dana Reyes", "dana@cpi.example"),
                params=campaign.get("params")
                or {**SAMPLE_POLICY_PARAMS, **sample_params(template)},
            )
        )
    assert made[0].split_parts == ("subject", "text", "html")
    assert made[1].split_parts == ()
    return made[0], made[1]


def same_bytes(a: bytes, b: bytes) -> tuple[bytes, bytes]:
    """Both messages with the two things that differ by design made equal: each campaign's
    random boundary and the Date (the builds may fall either side of a second)."""
    fixed = [
        re.sub(rb"Date: [^\r]*\r\n", b"Date: x\r\n", re.sub(rb"=_mailer_[0-9a-f]{24}", b"=_B", m))
        for m in (a, b)
    ]
    return fixed[0], fixed[1]


@pytest.fixture(scope="module", params=SHIPPED)
def campaign_pair(request: pytest.FixtureRequest) -> tuple[CampaignMessages, CampaignMessages]:
    return both_ways(request.param)


@given(recipient=recipients)
@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_shipped_template_builds_the_same_bytes_both_ways(
    campaign_pair: tuple[CampaignMessages, CampaignMessages], recipient: Recipient
) -> None:
    split, whole = campaign_pair
    outcomes = []
    for messages in (split, whole):
        try:
            outcomes.append(messages.build(recipient))
        except TemplateError as exc:  # e.g. an address that cannot be used: equally refused
            outcomes.append(str(exc))  # type: ignore[arg-type]
    once, every = outcomes
    if isinstance(once, str) or isinstance(every, str):
        assert once == every
        return
    assert same_bytes(once.data, every.data)[0] == same_bytes(once.data, every.data)[1]
    assert (once.downgrade is None) == (every.downgrade is None)
    if once.downgrade is not None and every.downgrade is not None:
        a, b = same_bytes(once.downgrade(), every.downgrade())
        assert a == b


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("value", HOSTILE)
def test_every_shipped_template_is_the_same_both_ways_for_each_hostile_value(
    name: str, value: str
) -> None:
    # Hostile values in every field, and in the campaign's own values too
    split, whole = both_ways(
        name,
        sender=SenderIdentity(value or "x", "dana@cpi.example", value),
        params={
            **SAMPLE_POLICY_PARAMS,
            "summary": value,
            "changes": [value, "plain"],
            **{p: value for p in load_template(SETTINGS, name).params},
        },
    )
    fields = {f: value for f in ("first_name", "last_name", "title", "org_name", "org_kind")}
    for r in (
        dataclasses.replace(SAMPLE_RECIPIENT, **fields),
        dataclasses.replace(SAMPLE_RECIPIENT, manager_name=value, org_employees=None),
    ):
        a, b = same_bytes(split.build(r).data, whole.build(r).data)
        assert a == b
        assert split.render_parts(r) == whole.render_parts(r)


# ---- the split itself, on templates written to test it ----------------------------------

ENV = make_environment(ROOT / "templates")
SHARED: dict[str, Any] = {
    "company": CompanyView("CPI <&>", "1 Main St", "https://cpi.example"),
    "campaign": CampaignView(3, "C & <D>", "promotions"),
    "sender": SenderView("Dana <Reyes>", "dana@cpi.example", ""),
    "policy": PolicyView("2", "soon", "sum <b>", ("one <1>", "two & 2", "three")),
    "params": {"x": "<param>"},
}
SYNTHETIC = [
    # a value, escaped; a test on recipient data with elif and else; nested branches
    "<p>{{ contact.first_name }}</p>{% if contact.title == 'A' %}a{{ company.name }}"
    "{% elif organization.employees %}{{ organization.employees * 2 }}"
    "{% if contact.last_name %}[{{ contact.last_name }}]{% endif %}"
    "{% else %}none {{ campaign.name }}{% endif %}!",
    # a campaign loop around recipient values, loop variables and `loop`
    "{% for change in policy.changes %}<li>{{ loop.index }} {{ change }} "
    "{{ contact.first_name ~ change }}</li>\n{% endfor %}",
    # variables set from recipient data, and set inside a recipient branch
    "{% set hello = contact.first_name or 'there' %}{% set n = 1 %}"
    "{% if contact.title %}{% set n = 2 %}{% endif %}<p>{{ hello }} {{ n }} {{ n + 1 }}</p>",
    # filters that read the autoescape setting at run time, concatenation, formatting
    "{{ [contact.first_name, company.name]|join(', ') }}|{{ contact.title|replace('a', '<a>') }}"
    "|{{ '%s-%s'|format(contact.first_name, organization.name) }}|{{ contact.title ~ '<x>' }}"
    "|{{ contact.first_name|safe }}|{{ contact.last_name|e }}|{{ contact.title|default('d') }}"
    "|{{ contact.first_name|upper|truncate(12) }}|{{ organization.employees|string }}",
    # campaign-only conditions around recipient values; a campaign loop with no recipient data
    "{% if campaign.category == 'promotions' %}{{ links.unsubscribe }}{% else %}"
    "{{ links.policy }}{% endif %}{% for c in policy.changes %}{{ c }}{% endfor %}"
    "{% if params.x %}{{ params.x }}{% endif %}",
    # whitespace control and raw blocks
    "  {%- if contact.first_name -%}  \n {{ contact.first_name }}  {%- endif %}\n"
    "{% raw %}{{ contact.first_name }}{% endraw %}",
]


@pytest.mark.parametrize("source", SYNTHETIC)
@pytest.mark.parametrize("suffix", ["html", "txt"])
@given(recipient=recipients)
@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_written_templates_render_the_same_both_ways(
    source: str, suffix: str, recipient: Recipient
) -> None:
    name = f"probe.{suffix}"  # the name picks autoescaping, for both renders alike
    split = split_source(ENV, source, name, f"<{name}>")
    assert split is not None
    whole = compile_source(ENV, source, name, f"<{name}>")
    bound = split.bind(SHARED)
    assert bound is not None
    contact, organization, manager = recipient_views(recipient)
    links = LinksView("https://u/<t>", "https://p/t", "https://policy")
    ctx = {**SHARED, "contact": contact, "organization": organization, "manager": manager}
    ctx["links"] = links
    results = []
    for render in (
        lambda: bound.render(ctx),
        lambda: bound.render_body(ctx),
        lambda: whole.render(ctx),
        lambda: crlf_body(whole.render(ctx)),
    ):
        try:
            with render_budget(5):
                results.append(render())
        except Exception as exc:  # the same failure both ways (e.g. None * 2 is fine, str * 2)
            results.append(type(exc).__name__)
    assert results[0] == results[2]
    assert results[1] == results[3]  # the body from pre-encoded text: the same bytes


@pytest.mark.parametrize("suffix", ["html", "txt"])
def test_one_bound_part_renders_recipient_after_recipient_as_the_whole_template_does(
    suffix: str,
) -> None:
    # Given a part that sets variables from recipient data, with values next to line breaks
    source = (
        "{% set hello = contact.first_name or 'there' %}{% if contact.title %}"
        "{% set hello = hello ~ '!' %}{% endif %}{{ contact.last_name }}\n{{ hello }}"
        "{{ contact.title }}{{ organization.name }}\nend {{ organization.kind }}"
    )
    name = f"probe.{suffix}"
    split = split_source(ENV, source, name, f"<{name}>")
    assert split is not None
    bound = split.bind(SHARED)
    assert bound is not None
    whole = compile_source(ENV, source, name, f"<{name}>")
    # When the same bound part renders one recipient after another (CRs at the joins: a value
    # ending in CR before text or a value starting with LF, non-ASCII, nothing at all)
    values = ["Zoë", "", "cr\r", "\nlf", "a\r\nb", "\r", "<&>", "東京\n"]
    for n, (first, last, title, org) in enumerate(
        zip(
            values,
            values[1:] + values[:1],
            values[2:] + values[:2],
            values[3:] + values[:3],
            strict=True,
        )
    ):
        r = dataclasses.replace(
            SAMPLE_RECIPIENT, first_name=first, last_name=last, title=title, org_name=org
        )
        contact, organization, manager = recipient_views(r)
        ctx = {**SHARED, "contact": contact, "organization": organization, "manager": manager}
        ctx["links"] = LinksView(f"https://u/{n}", "https://p", "https://policy")
        # Then each gets exactly the whole render: no variable is left over from the one before
        assert bound.render(ctx) == whole.render(ctx)
        assert bound.render_body(ctx) == crlf_body(whole.render(ctx))


@pytest.mark.parametrize(
    "source",
    [
        "{% for c in contact.first_name %}{{ c }}{% endfor %}",  # a loop over recipient data
        "{% for c in policy.changes if contact.title %}{{ c }}{% endfor %}",
        "{% macro m() %}{{ contact.first_name }}{% endmacro %}{{ m() }}",
        "{% filter upper %}{{ contact.first_name }}{% endfilter %}",
        "{% autoescape false %}{{ contact.first_name }}{% endautoescape %}",
        "{% set block %}{{ contact.first_name }}{% endset %}{{ block }}",
        "{% with x = contact.first_name %}{{ x }}{% endwith %}",
        "{{ policy.changes|random }}",
        "{% for c in policy.changes recursive %}{{ c }}{% endfor %}",
    ],
)
def test_what_the_split_cannot_prove_equal_is_rendered_whole(source: str) -> None:
    assert split_source(ENV, source, "probe.html", "<probe.html>") is None


def test_a_campaign_part_that_fails_leaves_the_part_rendered_whole() -> None:
    split = split_source(ENV, "{{ contact.first_name }}{{ params.x + 1 }}", "p.html", "<p.html>")
    assert split is not None
    assert split.bind(SHARED) is None  # "<param>" + 1: each message fails as it always did


def _tmp_messages(tmp_path: Path, body: str) -> CampaignMessages:
    root = tmp_path / "templates"
    (root / "features").mkdir(parents=True)
    for part in ("html", "txt"):
        src = ROOT / "templates" / "layouts" / f"base.{part}"
        (root / "layouts").mkdir(exist_ok=True)
        (root / "layouts" / f"base.{part}").write_text(src.read_text())
    (root / "features" / "probe.html").write_text(HEADER + body)
    settings = SETTINGS.with_(templates_dir=root)
    tpl: Template = load_template(settings, "features/probe")
    return CampaignMessages(
        settings,
        template=tpl,
        campaign=CampaignInfo(id=1, name="probe", category=Category.FEATURES),
        sender=SenderIdentity("Marketing", "news@cpi.example"),
    )


def test_recipient_values_are_still_evaluated_by_the_sandbox_with_its_limits(
    tmp_path: Path,
) -> None:
    messages = _tmp_messages(tmp_path, "<p>{{ contact.first_name * 100000 }}</p>\n")
    assert "html" in messages.split_parts
    with pytest.raises(TemplateError, match="too large") as caught:
        messages.build(dataclasses.replace(SAMPLE_RECIPIENT, first_name="ab"))
    assert isinstance(caught.value.__cause__, SecurityError)
    assert caught.value.template.endswith("features/probe.html") and caught.value.line == 5


def test_a_recipient_render_error_names_the_file_and_line(tmp_path: Path) -> None:
    body = (
        "<p>fine</p>\n{% if contact.title %}\n<p>{{ organization.employees + 1 }}</p>{% endif %}\n"
    )
    messages = _tmp_messages(tmp_path, body)
    assert "html" in messages.split_parts
    messages.build(dataclasses.replace(SAMPLE_RECIPIENT, title=""))  # the branch not taken
    with pytest.raises(TemplateError) as caught:
        messages.build(dataclasses.replace(SAMPLE_RECIPIENT, org_employees=None))
    assert caught.value.template.endswith("features/probe.html") and caught.value.line == 7
