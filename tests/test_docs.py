"""The README and the pages in docs/: links, length, runnable examples, named commands."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 200

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`([^`]+)`")
MAKE_CALL = re.compile(r"(?<![\w/.-])make[ \t]+([A-Za-z0-9][\w.-]*)")
CAPSEARCH_CALL = re.compile(r"(?<![\w/.-])capsearch[ \t]+([a-z][a-z-]*)")
MAKE_RULE = re.compile(r"^([A-Za-z0-9][\w.-]*(?:[ \t]+[A-Za-z0-9][\w.-]*)*)[ \t]*:(?!=)", re.M)
HELP_COMMAND = re.compile(r"^ {4}([a-z][a-z-]*)\b", re.M)

# What the README must name: every make target and command a newcomer uses.
README_MAKE_TARGETS = {
    "search",
    "list",
    "show",
    "validate",
    "dashboard",
    "report",
    "workers",
    "test",
    "lint",
    "bench",
    "bench-storage",
    "bench-search",
}
README_COMMANDS = {
    "run",
    "list",
    "show",
    "validate",
    "worker",
    "workers",
    "copy",
    "report",
    "kt",
    "export",
    "rerun",
    "dashboard",
}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number of the body's first line) of every fenced block."""
    return [
        (m.group(1).strip(), m.group(2), text.count("\n", 0, m.start(2)) + 1)
        for m in FENCE.finditer(text)
    ]


def prose(text: str) -> str:
    """The text with its fenced blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def code_text(text: str) -> str:
    """Everything set as code: fenced blocks and inline code spans."""
    blocks = [body for _, body, _ in fenced_blocks(text)]
    spans = INLINE_CODE.findall(prose(text))
    return "\n".join(blocks + spans)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", prose(path.read_text()), re.M)
    return {slug(h) for h in headings}


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)
    ]


def make_targets() -> set[str]:
    targets: set[str] = set()
    for names in MAKE_RULE.findall((ROOT / "Makefile").read_text()):
        targets.update(names.split())
    return targets


@pytest.fixture(scope="module")
def help_commands() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "search", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(HELP_COMMAND.findall(result.stdout))


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; at most {MAX_README_LINES}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    assert DOCS, "docs/ holds no Markdown page"
    linked = {(README.parent / t.split("#")[0]).resolve() for t in relative_links(README)}
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_python_examples_run_as_doctests(page: Path) -> None:
    text = page.read_text()
    parser = doctest.DocTestParser()
    failures = []
    for language, body, line in fenced_blocks(text):
        if language not in ("python", "py", "pycon"):
            continue
        where = f"{page.name}:{line}"
        if ">>>" not in body:
            failures.append(
                f"{where}: a Python block without >>> cannot be checked; write it as a doctest"
            )
            continue
        test = parser.get_doctest(body, {}, where, str(page), line - 1)
        output: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        result = runner.run(test, out=output.append)
        if result.failed:
            failures.append("".join(output))
    assert not failures, "\n".join(failures)


def test_study_files_shown_are_valid(tmp_path: Path) -> None:
    """Every whole study file shown (a TOML block with a top-level `objective`) validates."""
    paths = []
    for page in PAGES:
        for language, body, line in fenced_blocks(page.read_text()):
            if language == "toml" and re.search(r"^objective\s*=", body, re.M):
                path = tmp_path / f"{page.stem}_{line}.toml"
                path.write_text(body)
                paths.append(path)
    readme_files = [p for p in paths if p.name.startswith(f"{README.stem}_")]
    assert readme_files, "README.md shows no whole study file"
    result = subprocess.run(
        [sys.executable, "-m", "search", "validate", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == len(paths), result.stdout


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_make_targets_named_exist(page: Path) -> None:
    named = set(MAKE_CALL.findall(code_text(page.read_text())))
    unknown = sorted(named - make_targets())
    assert not unknown, f"{page.name} names make targets the Makefile lacks: {unknown}"


def test_readme_names_every_make_target_and_command() -> None:
    code = code_text(README.read_text())
    missing_targets = sorted(README_MAKE_TARGETS - set(MAKE_CALL.findall(code)))
    missing_commands = sorted(README_COMMANDS - set(CAPSEARCH_CALL.findall(code)))
    assert not missing_targets, f"README.md does not show make {missing_targets}"
    assert not missing_commands, f"README.md does not show capsearch {missing_commands}"


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_capsearch_commands_named_exist(page: Path, help_commands: set[str]) -> None:
    assert help_commands, "capsearch --help lists no command"
    named = set(CAPSEARCH_CALL.findall(code_text(page.read_text())))
    unknown = sorted(named - help_commands)
    assert not unknown, f"{page.name} names commands capsearch --help lacks: {unknown}"
