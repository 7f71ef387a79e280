"""Templates: loading, the static check, the sandbox, CSS inlining, errors that name the line,
and the `mailer template` commands."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from jinja2.exceptions import SecurityError

from mailer.cli import main
from mailer.config import Secret, Settings
from mailer.enums import Category
from mailer.errors import TemplateError
from mailer.messages import (
    CampaignInfo,
    CampaignMessages,
    SenderIdentity,
    check_template,
    list_templates,
    load_template,
)
from mailer.messages.context import SAMPLE_RECIPIENT
from mailer.messages.environment import make_environment

ROOT = Path(__file__).resolve().parent.parent
HEADER = "{#\nsubject: Hello {{ contact.first_name }}\ncategory: features\n#}\n"


@pytest.fixture
def shipped() -> Settings:
    return Settings(templates_dir=ROOT / "templates", secret_key=Secret("test-secret-0123456789"))


@pytest.fixture
def tmp_templates(tmp_path: Path) -> Settings:
    """A templates folder with the real layouts and nothing else."""
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates" / "layouts", root / "layouts")
    for category in Category:
        (root / category.value).mkdir()
    return Settings(templates_dir=root, secret_key=Secret("test-secret-0123456789"))


@pytest.fixture
def write(tmp_templates: Settings) -> Callable[..., str]:
    def write_template(body: str, name: str = "features/probe", text: str | None = None) -> str:
        root = Path(tmp_templates.templates_dir)
        (root / f"{name}.html").write_text(body, encoding="utf-8")
        if text is not None:
            (root / f"{name}.txt").write_text(text, encoding="utf-8")
        return name

    return write_template


def _messages(settings: Settings, name: str) -> CampaignMessages:
    tpl = load_template(settings, name)
    return CampaignMessages(
        settings,
        template=tpl,
        campaign=CampaignInfo(id=1, name="probe", category=tpl.category),
        sender=SenderIdentity("Marketing", "news@cpi.example"),
    )


def test_every_shipped_template_loads_and_passes_the_check(shipped: Settings) -> None:
    names = list_templates(shipped)
    assert {n.split("/")[0] for n in names} == {c.value for c in Category}
    for name in names:
        tpl = check_template(shipped, name)
        assert tpl.category.value == name.split("/")[0]


def test_the_policy_notice_has_a_factual_subject_and_no_promotion(shipped: Settings) -> None:
    tpl = load_template(shipped, "policy/privacy-policy-change")
    assert tpl.subject_source == "Update to our Privacy Policy"
    source = (ROOT / "templates/policy/privacy-policy-change.html").read_text().lower()
    for word in ("upgrade", "discount", "offer", "price", "sign up"):
        assert word not in source


def test_an_unknown_variable_fails_at_load_naming_file_line_and_variable(write, tmp_templates):
    name = write(HEADER + "<p>Hello</p>\n<p>{{ contcat.first_name }}</p>\n")
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_templates, name)
    err = caught.value
    assert err.template.endswith("features/probe.html")
    assert err.line == 6
    assert "contcat" in str(err) and "did you mean 'contact'" in str(err)


def test_an_unknown_field_of_a_known_name_fails_at_load_with_a_suggestion(write, tmp_templates):
    name = write(HEADER + "\n\n<p>{{ contact.frist_name }}</p>\n")
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_templates, name)
    assert caught.value.line == 7
    assert "contact.frist_name" in str(caught.value)
    assert "did you mean 'first_name'" in str(caught.value)


def test_an_unknown_variable_in_the_subject_names_the_header_line(write, tmp_templates):
    name = write("{#\ncategory: features\nsubject: Hi {{ contact.nick }}\n#}\n<p>x</p>\n")
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_templates, name)
    assert caught.value.line == 3
    assert "contact.nick" in str(caught.value)


def test_an_unknown_variable_in_the_text_sibling_names_the_txt_file(write, tmp_templates):
    name = write(HEADER + "<p>ok</p>\n", text="Hello\n{{ organisation.name }}\n")
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_templates, name)
    assert caught.value.template.endswith("probe.txt")
    assert caught.value.line == 2


def test_a_syntax_error_names_the_line(write, tmp_templates):
    name = write(HEADER + "<p>{% if contact.first_name %}unclosed</p>\n")
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_templates, name)
    assert caught.value.template.endswith("probe.html")
    assert caught.value.line


@pytest.mark.parametrize(
    "expression",
    [
        "contact.__class__",
        "contact.first_name.__class__.__mro__",
        "links.__init__.__globals__",
        "contact['__class__']",
    ],
)
def test_reaching_for_python_internals_is_refused_at_load(write, tmp_templates, expression):
    name = write(HEADER + f"<p>{{{{ {expression} }}}}</p>\n")
    with pytest.raises(TemplateError, match="not allowed"):
        load_template(tmp_templates, name)


def test_the_sandbox_stops_internals_the_static_check_cannot_see(write, tmp_templates):
    # |attr() hides the attribute name from the static check; the sandbox still refuses it.
    name = write(HEADER + '\n<p>{{ contact|attr("__class__") }}</p>\n')
    messages = _messages(tmp_templates, name)
    with pytest.raises(TemplateError) as caught:
        messages.build(SAMPLE_RECIPIENT)
    assert isinstance(caught.value.__cause__, SecurityError)
    assert caught.value.line == 6


def test_the_environment_itself_is_sandboxed(tmp_templates: Settings) -> None:
    env = make_environment(Path(tmp_templates.templates_dir))
    with pytest.raises(SecurityError):
        env.from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()
    with pytest.raises(SecurityError):
        env.from_string("{{ cycler.__init__.__globals__ }}").render(cycler=object())


def test_a_render_error_names_the_original_file_and_line_despite_css_inlining(write, tmp_templates):
    body = HEADER + "<h1>Hi</h1>\n<p>fine</p>\n<p>{{ organization.name + 1 }}</p>\n"
    messages = _messages(tmp_templates, write(body))
    with pytest.raises(TemplateError) as caught:
        messages.build(SAMPLE_RECIPIENT)
    assert caught.value.template.endswith("features/probe.html")
    assert caught.value.line == 7


@pytest.mark.parametrize(
    "body",
    [
        '{% extends "layouts/base.html" %}',
        '{% include "layouts/base.txt" %}',
        '{% set links = {"unsubscribe": ""} %}',
        "{% for company in [1] %}{% endfor %}",
    ],
)
def test_a_template_cannot_replace_the_layout_or_its_footer_links(write, tmp_templates, body):
    with pytest.raises(TemplateError):
        load_template(tmp_templates, write(HEADER + body + "\n"))


def test_the_header_is_required_and_must_match_the_folder(write, tmp_templates):
    with pytest.raises(TemplateError, match="header"):
        load_template(tmp_templates, write("<p>no header</p>\n"))
    wrong = "{#\nsubject: x\ncategory: promotions\n#}\n<p>x</p>\n"
    with pytest.raises(TemplateError, match="features/"):
        load_template(tmp_templates, write(wrong))
    bogus = "{#\nsubject: x\ncategory: newsletters\n#}\n<p>x</p>\n"
    with pytest.raises(TemplateError, match="unknown category"):
        load_template(tmp_templates, write(bogus))


def test_a_missing_template_says_where_it_looked(tmp_templates: Settings) -> None:
    with pytest.raises(TemplateError, match="no such template"):
        load_template(tmp_templates, "features/nothing")


def test_css_is_inlined_once_at_load(shipped: Settings) -> None:
    tpl = load_template(shipped, "promotions/open-enrollment")
    source = tpl.composites["<promotions/open-enrollment.html>"].source
    assert "<style" not in source
    assert 'style="' in source and "{{ links.unsubscribe }}" in source


def test_a_jinja_loop_directly_inside_a_table_is_refused_with_its_line(write, tmp_templates):
    body = (
        HEADER
        + "<table>\n{% for c in policy.changes %}<tr><td>{{ c }}</td></tr>{% endfor %}\n</table>\n"
    )
    with pytest.raises(TemplateError, match="table cell") as caught:
        load_template(tmp_templates, write(body))
    assert caught.value.line == 6


def test_the_text_part_is_derived_from_the_html_when_there_is_no_txt(write, tmp_templates):
    body = (
        HEADER
        + "<h1>Title</h1>\n<p>Dear {{ contact.first_name }}, see "
        + '<a href="{{ company.website }}/x">this</a>.</p>\n'
    )
    name = write(body)
    tpl = load_template(tmp_templates, name)
    assert tpl.is_text_derived
    _, text, _ = _messages(tmp_templates, name).render_parts(SAMPLE_RECIPIENT)
    assert "Dear Pat, see [this](https://www.cpi.example/x)" in text
    assert "<p>" not in text and "Title" in text


def test_autoescape_applies_to_html_only(write, tmp_templates):
    name = write(HEADER + "<p>{{ organization.name }}</p>\n", text="{{ organization.name }}\n")
    messages = _messages(tmp_templates, name)
    recipient = SAMPLE_RECIPIENT.__class__(
        **{**_fields(SAMPLE_RECIPIENT), "org_name": "Smith & <Sons>"}
    )
    _, text, html = messages.render_parts(recipient)
    assert "Smith &amp; &lt;Sons&gt;" in html
    assert "Smith & <Sons>" in text


def test_building_messages_reads_no_files(write, tmp_templates):
    name = write(HEADER + "<p>{{ contact.first_name }}</p>\n", text="{{ contact.first_name }}\n")
    messages = _messages(tmp_templates, name)
    shutil.rmtree(tmp_templates.templates_dir)
    assert b"Pat" in messages.build(SAMPLE_RECIPIENT).data


def _fields(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in obj.__slots__}  # type: ignore[attr-defined]


# ---- CLI --------------------------------------------------------------------------------


def test_template_list_and_check_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(ROOT / "templates"))
    runner = CliRunner()
    listed = runner.invoke(main, ["template", "list"])
    assert listed.exit_code == 0, listed.output
    assert "promotions/open-enrollment" in listed.output
    checked = runner.invoke(main, ["template", "check"])
    assert checked.exit_code == 0, checked.output
    assert checked.output.count("ok ") == len(listed.output.strip().splitlines())


def test_template_check_fails_naming_the_broken_template(
    monkeypatch: pytest.MonkeyPatch, write, tmp_templates
) -> None:
    write(HEADER + "<p>{{ contact.nmae }}</p>\n", name="features/broken")
    write(HEADER + "<p>{{ contact.first_name }}</p>\n", name="features/fine")
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(tmp_templates.templates_dir))
    result = CliRunner().invoke(main, ["template", "check"])
    assert result.exit_code != 0
    assert "FAIL features/broken" in result.output
    assert "ok   features/fine" in result.output


def test_template_preview_renders_for_a_real_contact(
    monkeypatch: pytest.MonkeyPatch, rt, make_contact, make_user, make_org, tmp_path: Path
) -> None:
    manager = make_user(display_name="Dana Reyes", email="dana@cpi.example", role="account_manager")
    org = make_org(name="Zoë's Bakery", account_manager_id=manager.id)
    contact = make_contact(organization=org, first_name="José", email="jose@bakery.example")
    make_user(username="tester", role="admin")  # service templates: admins and managers
    make_user(username="lee", role="account_manager")
    for key, value in {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": rt.settings.secret_key.reveal(),
        "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
        "MAILER_USER": "tester",
    }.items():
        monkeypatch.setenv(key, value)
    html_file = tmp_path / "preview.html"
    result = CliRunner().invoke(
        main,
        [
            "template",
            "preview",
            "service/planned-maintenance",
            "--contact",
            contact.email,
            "--html",
            str(html_file),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Subject: BenefitElect maintenance on Saturday night: what Zoë's Bakery" in result.output
    assert "From: Dana Reyes <dana@cpi.example>" in result.output
    assert "Hello José," in result.output
    assert "Zoë&#39;s Bakery" in html_file.read_text() or "Zoë's Bakery" in html_file.read_text()
    missing = CliRunner().invoke(
        main, ["template", "preview", "service/planned-maintenance", "--contact", "no@x.example"]
    )
    assert missing.exit_code != 0 and "no contact" in missing.output
    # another account manager cannot render it with Dana's client's contact
    refused = CliRunner().invoke(
        main,
        ["template", "preview", "service/planned-maintenance", "--contact", contact.email],
        env={"MAILER_USER": "lee"},
    )
    assert refused.exit_code == 4 and "client you do not manage" in refused.output


@pytest.mark.parametrize("opener", ["<!--", "<style>", "<textarea>"])
def test_unclosed_html_that_would_swallow_the_footer_is_refused(write, tmp_templates, opener):
    with pytest.raises(TemplateError, match=r"CSS inlining|HTML parser|footer"):
        load_template(tmp_templates, write(HEADER + f"<p>hi</p>\n{opener}\n"))


def _footer_cell(html: str) -> str:
    cell = re.search(r'<td class="footer"[^>]*>', html)
    assert cell is not None
    return cell.group()


def test_author_css_cannot_reach_the_layout_footer(write, tmp_templates):
    # Given a template whose CSS targets the footer (and every cell, paragraph and link)
    style = (
        "<style>.footer, td, p, a { display: none !important; font-size: 0 }"
        " .note { color: #123456 }</style>\n"
    )
    name = write(HEADER + style + '<p class="note">Hello</p>\n')
    # When it is checked and rendered
    check_template(tmp_templates, name)
    _, _, html = _messages(tmp_templates, name).render_parts(SAMPLE_RECIPIENT)
    # Then its rules apply to its own content only: the footer keeps the layout's styles
    footer = _footer_cell(html)
    assert "display" not in footer and "font-size: 12px" in footer
    assert "color: #123456" in html  # the author's rule still styles the author's element


@pytest.mark.parametrize(
    "opener",
    [
        '<table style="display:none"><tr><td>',
        '<div style="display:none">',
        "<span hidden><b>",
    ],
)
def test_content_that_leaves_an_element_open_is_refused_naming_it(write, tmp_templates, opener):
    name = write(HEADER + "<p>Hello</p>\n" + opener + "\n<p>rest</p>\n")
    with pytest.raises(TemplateError, match=r"never closed") as caught:
        check_template(tmp_templates, name)
    assert caught.value.line == 6
    tag = opener[1:].split()[0].split(">")[0]
    assert f"<{tag}>" in str(caught.value)


def test_content_that_closes_a_layout_element_is_refused(write, tmp_templates):
    name = write(HEADER + "<p>Hello</p>\n</td></tr></table>\n<table><tr><td>\n")
    with pytest.raises(TemplateError, match=r"</td>.*did not open"):
        load_template(tmp_templates, name)


@pytest.mark.parametrize(
    "style",
    [
        "display:none",
        "visibility: hidden",
        "opacity:0",
        "font-size:0px",
        "max-height: 0; overflow: hidden",
        "mso-hide: all",
    ],
)
def test_a_layout_that_hides_the_footer_in_an_ancestor_is_refused(tmp_templates, write, style):
    layout = Path(tmp_templates.templates_dir) / "layouts" / "base.html"
    source = layout.read_text()
    layout.write_text(
        source.replace('<tr><td class="footer">', f'<tr style="{style}"><td class="footer">')
    )
    with pytest.raises(TemplateError, match="hidden"):
        load_template(tmp_templates, write(HEADER + "<p>x</p>\n"))


@pytest.mark.parametrize(
    "css",
    ["position: absolute; top: 0", "position:fixed", "margin-top: -400px", "transform: scale(0)"],
)
def test_author_css_that_can_cover_the_footer_is_refused(write, tmp_templates, css):
    for body in (f'<div style="{css}">x</div>\n', f"<style>.x {{ {css} }}</style>\n"):
        with pytest.raises(TemplateError, match="cover or move"):
            load_template(tmp_templates, write(HEADER + body))


def test_check_fails_when_an_edited_layout_drops_the_postal_address(write, tmp_templates):
    layout = Path(tmp_templates.templates_dir) / "layouts" / "base.txt"
    layout.write_text(layout.read_text().replace("{{ company.postal_address }}", ""))
    name = write(HEADER + "<p>{{ contact.first_name }}</p>\n", text="{{ contact.first_name }}\n")
    with pytest.raises(TemplateError, match="postal address"):
        check_template(tmp_templates, name)


def test_a_policy_notice_with_promotional_content_is_refused(write, tmp_templates):
    header = "{#\nsubject: Update to our Privacy Policy\ncategory: policy\n#}\n"
    body = header + "<p>{{ policy.summary }}</p>\n<p>Upgrade to Premium today!</p>\n"
    with pytest.raises(TemplateError, match="promotional") as caught:
        load_template(tmp_templates, write(body, name="policy/probe"))
    assert caught.value.line == 6
    sneaky = "{#\nsubject: Privacy update and 20% off\ncategory: policy\n#}\n<p>x</p>\n"
    with pytest.raises(TemplateError, match="subject"):
        load_template(tmp_templates, write(sneaky, name="policy/probe"))


def test_a_feature_explanation_may_not_lead_with_pricing(write, tmp_templates):
    with pytest.raises(TemplateError, match="may not lead with a promotion"):
        load_template(tmp_templates, write(HEADER + "<p>New pricing for BenefitElect</p>\n"))
    later = HEADER + "<p>" + "How enrollment works. " * 40 + "</p>\n<p>Ask about pricing.</p>\n"
    assert load_template(tmp_templates, write(later)).category is Category.FEATURES


def test_loops_filters_and_local_names_work_in_templates(write, tmp_templates):
    header = "{#\nsubject: Update to our Privacy Policy\ncategory: policy\n#}\n"
    body = (
        header
        + "{% set greeting = 'Hello' %}<p>{{ greeting }} {{ contact.first_name|upper }}</p>\n"
        "<ul>{% for change in policy.changes %}<li>{{ loop.index }}. {{ change }}</li>"
        "{% endfor %}</ul>\n"
    )
    name = write(body, name="policy/probe")
    tpl = load_template(tmp_templates, name)
    messages = CampaignMessages(
        tmp_templates,
        template=tpl,
        campaign=CampaignInfo(id=1, name="n", category=Category.POLICY),
        sender=SenderIdentity("CPI", "privacy@cpi.example"),
        params={"version": "3", "changes": ["First change", "Second change"]},
    )
    _, text, html = messages.render_parts(SAMPLE_RECIPIENT)
    assert "Hello PAT" in html
    assert re.search(r"<li[^>]*>1\. First change</li><li[^>]*>2\. Second change</li>", html)
    assert "2. Second change" in text  # derived from the HTML


PARAMS_HEADER = (
    "{#\nsubject: Webinar on {{ params.date }}\ncategory: features\nparams: date, time\n#}\n"
)


def test_a_template_reads_the_campaign_parameters_it_declares(
    tmp_templates: Settings, write: Callable[..., str]
) -> None:
    # Given a template declaring two parameters
    name = write(PARAMS_HEADER + "<p>Join us on {{ params.date }} at {{ params['time'] }}.</p>\n")
    tpl = load_template(tmp_templates, name)
    assert tpl.params == ("date", "time")
    # When a campaign gives them
    messages = CampaignMessages(
        tmp_templates,
        template=tpl,
        campaign=CampaignInfo(id=1, name="probe", category=tpl.category),
        sender=SenderIdentity("Marketing", "news@cpi.example"),
        params={"date": "March 3", "time": "10 am PT"},
    )
    subject, text, html = messages.render_parts(SAMPLE_RECIPIENT)
    # Then subject and body show the values
    assert subject == "Webinar on March 3"
    assert "Join us on March 3 at 10 am PT." in text and "10 am PT" in html


@pytest.mark.parametrize(
    ("header_params", "body", "message"),
    [
        (
            "date",
            "{{ params.dat }}",
            "line 7, column 11: unknown campaign parameter 'params.dat'; "
            "did you mean 'params.date'?",
        ),
        (
            "date",
            "{{ params.venue }}",
            "line 7, column 11: campaign parameter 'params.venue' is not declared; "
            "declare it in the header: params: date, venue",
        ),
        (
            "",
            "{{ params.venue }}",
            "campaign parameter 'params.venue' is not declared; declare it in the header: "
            "params: venue",
        ),
        ("Date", "x", "params: 'Date' is not a parameter name"),
        ("date, date", "x", "params: 'date' is declared twice"),
    ],
)
def test_the_static_check_refuses_undeclared_or_malformed_parameters(
    tmp_templates: Settings, write: Callable[..., str], header_params: str, body: str, message: str
) -> None:
    header = "{#\nsubject: Hi\ncategory: features\n"
    header += f"params: {header_params}\n#}}\n" if header_params else "#}\n"
    name = write(header + ("\n" if header_params else "\n\n") + body + "\n")
    with pytest.raises(TemplateError, match=re.escape(message)):
        load_template(tmp_templates, name)


def test_a_campaigns_parameters_must_match_the_declared_ones(
    tmp_templates: Settings, write: Callable[..., str]
) -> None:
    from mailer.messages import check_params

    tpl = load_template(tmp_templates, write(PARAMS_HEADER + "<p>{{ params.time }}</p>\n"))
    check_params(tpl, {"date": "March 3", "time": "10 am"})
    with pytest.raises(
        TemplateError, match="unknown campaign parameter 'tiem'; did you mean 'time'"
    ):
        check_params(tpl, {"date": "March 3", "tiem": "10 am"})
    with pytest.raises(
        TemplateError, match="needs the campaign parameter time; give --param time="
    ):
        check_params(tpl, {"date": "March 3"})
    plain = load_template(tmp_templates, write(HEADER + "<p>Hi</p>\n", name="features/plain"))
    with pytest.raises(TemplateError, match="it declares none"):
        check_params(plain, {"date": "March 3"})


def test_the_shipped_webinar_lists_its_parameters(shipped: Settings) -> None:
    result = CliRunner().invoke(
        main, ["template", "list"], env={"MAILER_TEMPLATES_DIR": str(shipped.templates_dir)}
    )
    assert result.exit_code == 0, result.output
    assert "[--param date, time]" in result.output
