"""Templates cannot tie up a worker: bounded `**`, `*` and ranges, and a render time budget."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailer.config import Secret, Settings
from mailer.errors import TemplateError
from mailer.messages import check_template
from mailer.messages.context import SAMPLE_RECIPIENT
from tests.test_templates import HEADER, _messages

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tmp_templates(tmp_path: Path) -> Settings:
    root = tmp_path / "templates"
    shutil.copytree(ROOT / "templates" / "layouts", root / "layouts")
    (root / "features").mkdir()
    return Settings(templates_dir=root, secret_key=Secret("test-secret-0123456789"))


@pytest.fixture
def write(tmp_templates: Settings) -> Callable[[str], str]:
    def write_template(body: str) -> str:
        (Path(tmp_templates.templates_dir) / "features" / "probe.html").write_text(body)
        return "features/probe"

    return write_template


def test_a_huge_power_does_not_hang_template_check_at_compile_time(tmp_path: Path) -> None:
    # constant folding would compute 9**(9**10) while compiling: run it where it can be killed
    script = textwrap.dedent(
        f"""
        import shutil, sys
        from pathlib import Path
        from mailer.config import Secret, Settings
        from mailer.errors import TemplateError
        from mailer.messages import check_template
        root = Path({str(tmp_path)!r}) / "templates"
        shutil.copytree({str(ROOT / "templates" / "layouts")!r}, root / "layouts")
        (root / "features").mkdir()
        (root / "features" / "power.html").write_text({HEADER!r} + "<p>{{{{ 9**(9**10) }}}}</p>\\n")
        try:
            settings = Settings(templates_dir=root, secret_key=Secret("k" * 40))
            check_template(settings, "features/power")
        except TemplateError as exc:
            print("REFUSED", exc)
        """
    )
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        pytest.fail("template check still computing 9**(9**10) after 30 s")
    assert time.monotonic() - started < 30
    assert "REFUSED" in done.stdout, done.stderr
    assert "too large" in done.stdout


@pytest.mark.parametrize(
    "expression",
    [
        '"x" * 20000',
        '["x"] * 20000',
        "10 ** 400",
        '"ab" + "c" * 9999 + "d" * 9999',
        '"%099999d" % 1',
    ],
)
def test_oversized_products_are_refused_with_the_reason(
    write, tmp_templates: Settings, expression: str
) -> None:
    name = write(HEADER + f"<p>{{{{ {expression} }}}}</p>\n")
    with pytest.raises(TemplateError, match="too large"):
        check_template(tmp_templates, name)


@pytest.mark.parametrize(
    "expression",
    [
        '"x"|center(100000000)',
        '"x"|indent(100000000)',
        '"x".ljust(100000000)',
        '"x".zfill(100000000)',
        '"x\tx".expandtabs(100000000)',
        '"{:>100000000}".format(1)',
        '("x" * 9000)|replace("x", "y" * 9000)',
        '("x" * 9000).replace("x", "y" * 9000)',
        '"-".join(["x" * 9000, "y" * 9000])',
    ],
)
def test_filters_and_methods_that_take_a_size_are_bounded_too(
    write, tmp_templates: Settings, expression: str
) -> None:
    name = write(HEADER + f"<p>{{{{ {expression} }}}}</p>\n")
    started = time.monotonic()
    with pytest.raises(TemplateError, match="too large"):
        check_template(tmp_templates, name)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "body",
    [
        "{% if 1 %}" * 2000 + "{% endif %}" * 2000,  # Jinja's parser: RecursionError
        "{% if 1 %}" * 150 + "{% endif %}" * 150,  # Python: too many levels of indentation
        "{% for x in [1] %}" * 30 + "{% endfor %}" * 30,  # Python: too many nested blocks
        "{{ " + "(" * 150 + "1" + ")" * 150 + " }}",
    ],
)
def test_a_template_nested_past_pythons_limits_is_refused_with_the_fix(
    write, tmp_templates: Settings, body: str
) -> None:
    # each was a 500 when an editor saved it (the errors are not TemplateSyntaxError)
    name = write(HEADER + f"<p>{body}</p>\n")
    with pytest.raises(TemplateError, match="nested too deeply; flatten the template"):
        check_template(tmp_templates, name)


def test_small_arithmetic_still_works(write, tmp_templates: Settings) -> None:
    name = write(
        HEADER + '<p>{{ 2 ** 10 }} {{ "-" * 3 }} {{ [1] * 2 }} {{ 3 * 4 }} '
        '{{ "a"|center(5) }}|{{ "b".ljust(3) }}|{{ "c-d".replace("-", "+") }}</p>\n'
    )
    check_template(tmp_templates, name)
    _, _, html = _messages(tmp_templates, name).render_parts(SAMPLE_RECIPIENT)
    assert "1024 --- [1, 1] 12   a  |b  |c+d" in html


def test_a_render_past_its_time_budget_fails_the_message_with_the_reason(
    write, tmp_templates: Settings
) -> None:
    loops = '{% for a in "x" * 9000 %}{% for b in "y" * 9000 %}{% endfor %}{% endfor %}'
    name = write(HEADER + f"<p>hi</p>{loops}\n")
    settings = tmp_templates.with_(template_render_budget_s=0.3)
    messages = _messages(settings, name)
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"took longer than 0.3 s"):
        messages.build(SAMPLE_RECIPIENT)
    assert time.monotonic() - started < 3
