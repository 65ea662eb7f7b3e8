"""The documentation site is complete and the README stays its front door.

The reference pages are written by hand (docs/reference/*.md); these tests fail when the code has a command option, a
setting or a system check id that they do not name, when they name one the code no longer has, and when the Safety
page names a test that does not exist. They read files and argument parsers only: no server, no site build
(CI builds the site with ``mkdocs build --strict`` in seeds/scripts/test.sh).
"""

from __future__ import annotations

import re
import unicodedata
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

import pytest
from django.core.management import load_command_class

from seeddump import cli, conf
from seeddump import pytest_plugin as seeddump_pytest_plugin

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
COMMANDS = sorted(p.stem for p in (REPO / "seeddump/management/commands").glob("*.py") if not p.stem.startswith("_"))
# Options every Django command has; docs/reference/commands.md names them once, above the commands.
DJANGO_OPTIONS = {
    "-h",
    "--help",
    "--version",
    "-v",
    "--verbosity",
    "--settings",
    "--pythonpath",
    "--traceback",
    "--no-color",
    "--force-color",
    "--skip-checks",
}


def page(path: str) -> str:
    return (DOCS / path).read_text()


def section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def named(option: str, text: str) -> bool:
    """``option`` appears in code: `--jobs`, `--jobs N`, `--media`, …"""
    return re.search(rf"`{re.escape(option)}[` ]", text) is not None


def parser_of(name: str) -> ArgumentParser:
    return load_command_class("seeddump", name).create_parser("manage.py", name)


def table_options(text: str) -> set[str]:
    """The options an options table names in its first column."""
    found: set[str] = set()
    for row in re.findall(r"^\| (`[^|]*`) \|", text, re.M):
        found.update(re.findall(r"`(-{1,2}[a-z][a-z-]*)", row))
    return found


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_of_every_command_is_in_the_reference(name: str) -> None:
    text = section(page("reference/commands.md"), name)
    parser = parser_of(name)
    options = {o for action in parser._actions for o in action.option_strings} - DJANGO_OPTIONS
    missing = sorted(o for o in options if not named(o, text))
    assert not missing, f"docs/reference/commands.md, {name}: add {missing}"
    positionals = [action for action in parser._actions if not action.option_strings]
    for action in positionals:  # every positional is an environment name, shown as ENV
        assert action.dest == "environment" and named("ENV", text), f"{name}: document {action.dest}"
    gone = sorted(table_options(text) - options - DJANGO_OPTIONS)
    assert not gone, f"docs/reference/commands.md, {name}: {gone} is no option of the command any more"


def test_python_m_seeddump_is_in_the_reference() -> None:
    text = section(page("reference/commands.md"), "python -m seeddump")
    verbs = re.findall(r"^ {2}(\w+) ENV", cli.COMMANDS, re.M)
    options = set(re.findall(r"(--[a-z-]+)", cli.COMMANDS))
    assert verbs == ["restore"]
    assert f"python -m seeddump {verbs[0]}" in text
    assert all(named(o, text) for o in options), options
    # The commands it names as running through manage.py are the app's commands, each with a section.
    listed = re.search(r"manage\.py: (.*?) \(python manage", cli.COMMANDS, re.S)
    assert listed
    assert sorted(re.split(r",\s*", listed.group(1).strip())) == COMMANDS


class _Recorder:
    """Stands for pytest's parser: records the plugin's options and ini names."""

    def __init__(self) -> None:
        self.options: list[str] = []
        self.inis: list[str] = []

    def getgroup(self, *args: Any, **kwargs: Any) -> _Recorder:
        return self

    def addoption(self, *names: str, **kwargs: Any) -> None:
        self.options.extend(names)

    def addini(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.inis.append(name)


def test_every_pytest_option_and_ini_setting_is_documented() -> None:
    recorder = _Recorder()
    seeddump_pytest_plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    text = section(page("how-to/pytest.md"), "Options and ini settings")
    assert recorder.options and recorder.inis
    missing = [name for name in recorder.options + recorder.inis if not named(name, text)]
    assert not missing, f"docs/how-to/pytest.md: add {missing}"


def settings_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in section(page("reference/settings.md"), "All settings").splitlines():
        match = re.fullmatch(r"\| `SEEDDUMP_(\w+)` \|(.*)\|", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in re.split(r"(?<!\\)\|", match.group(2))]
    return rows


def test_every_setting_is_in_the_reference_with_its_default_and_variable() -> None:
    properties = {name for name, value in vars(conf.Settings).items() if isinstance(value, property)}
    # Every property is a setting (SIGNING_KEYS is read as SEEDDUMP_SIGNING_KEY): conf.NAMES is what check reads.
    assert {"SIGNING_KEY" if p == "SIGNING_KEYS" else p for p in properties} == set(conf.NAMES)
    rows = settings_rows()
    missing = sorted(set(conf.NAMES) - set(rows))
    assert not missing, f"docs/reference/settings.md: add a row for {['SEEDDUMP_' + n for n in missing]}"
    gone = sorted(set(rows) - set(conf.NAMES))
    assert not gone, f"docs/reference/settings.md: {gone} is no setting any more"
    for name, cells in rows.items():
        default, variable, meaning = cells
        assert default and meaning, f"SEEDDUMP_{name}: say its default and what it does"
        assert f"`SEEDDUMP_{name}`" in variable, f"SEEDDUMP_{name}: name its environment variable"


def test_the_other_environment_variables_are_listed() -> None:
    text = section(page("reference/settings.md"), "Other environment variables")
    missing = sorted(n for n in conf.OTHER_ENVIRONMENT_NAMES if f"`SEEDDUMP_{n}`" not in text)
    assert not missing, f"docs/reference/settings.md: add {missing}"


def test_every_system_check_id_is_in_the_reference() -> None:
    code_ids = set(re.findall(r'id="(seeddump\.[EW]\d{3})"', (REPO / "seeddump/checks.py").read_text()))
    documented = set(re.findall(r"^\| `(seeddump\.[EW]\d{3})` \|", page("reference/checks.md"), re.M))
    assert code_ids
    assert not code_ids - documented, f"docs/reference/checks.md: add {sorted(code_ids - documented)}"
    assert not documented - code_ids, f"docs/reference/checks.md: {sorted(documented - code_ids)} is no check any more"


def test_every_test_the_safety_page_names_exists() -> None:
    text = page("explanation/safety.md")
    sources = [path.read_text() for path in (REPO / "tests").glob("test_*.py")]
    tests = {name for source in sources for name in re.findall(r"def (test_\w+)", source)}
    named_tests = re.findall(r"`(test_\w+?)(…)?`", text)
    assert named_tests

    def exists(name: str, cut: str) -> bool:  # a name cut short with … stands for the tests it begins
        return any(test.startswith(name) for test in tests) if cut else name in tests

    missing = [name + cut for name, cut in named_tests if not exists(name, cut)]
    assert not missing, f"docs/explanation/safety.md names tests that do not exist: {missing}"
    files = set(re.findall(r"`(tests/[\w/]+\.py)`", text))
    assert all((REPO / f).exists() for f in files), sorted(f for f in files if not (REPO / f).exists())


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc gives a heading (its default slugify)."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", path.read_text(), re.M):
        explicit = re.search(r"\{#([\w-]+)\}\s*$", heading)
        found.add(explicit.group(1) if explicit else slug(heading))
    return found


def test_the_readme_is_a_front_door_whose_links_lead_into_the_site() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 260, "the README is the front door: move the detail into docs/"
    assert "bash seeds/scripts/test.sh" in readme  # the command CI runs (.ci/run)
    assert "bash seeds/scripts/test.sh" in (REPO / ".ci/run").read_text()
    assert "mkdocs build" in readme and "mkdocs serve" in readme
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([\w-]+))?\)", readme)
    assert links
    for target, anchor in links:
        path = REPO / target
        assert path.exists(), f"README links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"README links to {target}#{anchor}, which has no such heading"


def test_the_site_has_a_page_for_every_file_and_includes_the_changelog() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert all(f" {p}\n" in nav for p in pages), [p for p in pages if f" {p}\n" not in nav]
    assert '--8<-- "CHANGELOG.md"' in page("changelog.md")
    assert "](benchmark-scale.svg)" in page("benchmarks.md")  # the chart benchmark_scale.py writes


def test_the_docs_tools_are_pinned_alike_in_both_places() -> None:
    block = re.search(r"^docs = \[\n(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.M | re.S)
    assert block
    extra = re.findall(r'"([^"]+)"', block.group(1))
    lines = (DOCS / "requirements.txt").read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert extra == pins and all("==" in pin for pin in pins)
