"""The documentation cannot go stale unnoticed: the site builds with ``mkdocs build --strict`` (a
broken link, a missing anchor or a page left out of the navigation fails), README stays a front
page, and every page of docs/ is in the navigation."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import BIN


def _mkdocs(project: Path, site: Path) -> subprocess.CompletedProcess:
    exe = BIN / "mkdocs" if (BIN / "mkdocs").exists() else shutil.which("mkdocs")
    cmd = [str(exe), "build", "--strict", "--site-dir", str(site)] if exe else \
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True)


def _nav_pages(nav: list) -> list[str]:
    """Every page of a MkDocs nav, its groups (Use, Results, Reference, Development) flattened."""
    pages = []
    for entry in nav:
        (value,) = entry.values()
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_docs_site_builds_in_strict_mode(pristine: Path, tmp_path: Path):
    proc = _mkdocs(pristine, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nav = yaml.safe_load((pristine / "mkdocs.yml").read_text())["nav"]
    assert [next(iter(group)) for group in nav] == ["Use", "Results", "Reference", "Development"]
    for page in _nav_pages(nav):
        assert (tmp_path / "site" / page.replace(".md", "") / "index.html").exists() or page == "index.md"


def test_a_broken_link_fails_the_build(pristine: Path, tmp_path: Path):
    page = pristine / "docs" / "metrics.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    proc = _mkdocs(pristine, tmp_path / "site")
    assert proc.returncode != 0 and "no-such-page.md" in proc.stdout + proc.stderr


def test_every_docs_page_is_in_the_navigation(pristine: Path):
    nav = yaml.safe_load((pristine / "mkdocs.yml").read_text())["nav"]
    listed = set(_nav_pages(nav))
    pages = {str(p.relative_to(pristine / "docs")) for p in (pristine / "docs").glob("**/*.md")}
    assert pages == listed, pages ^ listed


def test_readme_is_a_front_page_that_links_every_docs_page(pristine: Path):
    readme = (pristine / "README.md").read_text()
    assert 100 <= len(readme.splitlines()) <= 250
    for page in (pristine / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"(docs/{page.name})" in readme, page.name
    for line in readme.splitlines():
        assert "this session" not in line.lower() and "earlier session" not in line.lower(), line


def test_every_reference_to_a_readme_section_or_a_project_file_exists(pristine: Path):
    """A pointer to a README section that moved to docs/, or to a file the project does not have (a
    specification kept outside the repository), is found here, in code, configs, the Makefile and docs."""
    import re

    headings = {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+)$", (pristine / "README.md").read_text(), re.M)}
    section = re.compile(r"""README(?:\.md)?(?:'s)?(?:,\s*|:\s*|\s+\(?)["“']([^"”'\n{}]{3,80})["”']""")
    path = re.compile(r"(?<![\w/.-])((?:docs|src/unlearn_da|workflow|tests)/[\w./-]*\w)")
    sources = [*pristine.glob("src/unlearn_da/**/*.py"), *pristine.glob("config/**/*.yaml"),
               *pristine.glob("config/*.md"), *pristine.glob("workflow/**/*"), pristine / "Snakefile",
               pristine / "Makefile", *pristine.glob("docs/*.md"), pristine / "README.md", pristine / "CHANGELOG.md",
               pristine / "dvc.yaml", pristine / "pyproject.toml"]
    dangling = []
    for source in (s for s in sources if s.is_file()):
        text = source.read_text(errors="replace")
        name = source.relative_to(pristine)
        dangling += [f"{name}: README section {m.group(1)!r}" for m in section.finditer(text)
                     if m.group(1).strip() not in headings]
        dangling += [f"{name}: {m.group(1)}" for m in path.finditer(text)
                     if not (pristine / m.group(1).rstrip(".")).exists() and text[m.end():m.end() + 1] not in "<*{"]
        dangling += [f"{name}: PAPER.md" for _ in re.finditer(r"\bPAPER\.md\b", text)]
    assert not dangling, "\n".join(sorted(set(dangling)))
    assert (pristine / "LICENSE").is_file()


def test_help_lists_the_commands_a_user_runs_and_names_the_plumbing_apart():
    """28 commands flat, 19 of them run only by rules or the Makefile; now --help lists what a user runs."""
    done = subprocess.run([sys.executable, "-m", "unlearn_da", "--help"], capture_output=True, text=True, timeout=60)
    listed, _, epilog = done.stdout.partition("run by the pipeline's rules")
    for command in ("verify", "check-config", "apply-selection", "check-reproduction", "gpu-check"):
        assert f"\n    {command}" in listed, command
    for command in ("prepare-data", "unlearn", "metrics", "dvc-stage", "concurrency-worker"):
        assert f"\n    {command}" not in listed and command in epilog, command
    inner = subprocess.run([sys.executable, "-m", "unlearn_da", "unlearn", "--help"], capture_output=True, text=True,
                           timeout=60)
    assert inner.returncode == 0 and "--original" in inner.stdout


#: a measured number typed into a page: a duration, a hex hash (a commit, a digest) or a word of a lab notebook
TYPED = {
    "duration": re.compile(r"(?<![\w.])\d[\d,.]*(?:\s?[–-]\s?\d[\d,.]*)?\s?(?:ms|s|min|minutes?|h|hours?|seconds?|days?)\b"),
    "hex hash": re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"),
    "lab notebook": re.compile(r"\b(?:guests?|on another day|when measured|this session|earlier session)\b", re.I),
}
#: the one page that is a log: measurements and decisions, dated, on named machines
LOG_PAGE = "docs/log.md"


def typed_numbers(text: str) -> list[tuple[int, str, str]]:
    """(line, kind, text) of every typed measurement outside generated blocks, code spans and code blocks
    (a setting written as code, e.g. `gpu.wait_s: 3600`, is a value, not a measurement)."""
    def blank(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    text = re.sub(r"<!-- generated: [\w-]+ -->.*?<!-- end generated -->", blank, text, flags=re.S)
    text = re.sub(r"```.*?```", blank, text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", blank, text)
    return [(i, kind, m.group(0)) for i, line in enumerate(text.splitlines(), 1)
            for kind, rx in TYPED.items() for m in rx.finditer(line)]


def test_no_page_types_a_measured_number(pristine: Path):
    """Wall times, hashes and lab notes are rendered from measurements/measurements.json and the
    shipped results (make readme-tables), or kept on the log page; a typed copy drifts from the truth."""
    pages = [pristine / "README.md", pristine / "config" / "README.md", *sorted((pristine / "docs").glob("*.md"))]
    found = [f"{p.relative_to(pristine)}:{line}: {kind} {hit!r}" for p in pages
             if str(p.relative_to(pristine)) != LOG_PAGE for line, kind, hit in typed_numbers(p.read_text())]
    assert not found, "\n".join(found)


def test_the_typed_number_check_finds_what_it_should():
    text = ("took **40 min 33 s** on a 2-core guest at commit d6d8463\n`gpu.wait_s: 3600 s` is a setting\n"
            "<!-- generated: x -->\n9 min 31 s\n<!-- end generated -->\n5 seeds, 471 jobs, ResNet-18, 8×8\n")
    kinds = [(line, kind) for line, kind, _ in typed_numbers(text)]
    assert kinds == [(1, "duration"), (1, "duration"), (1, "hex hash"), (1, "lab notebook")]


def test_the_workflow_catalog_makes_no_profile_mandatory(pristine: Path):
    """The Snakemake workflow catalog prints these flags as the ones every run needs: the default
    config runs without an overlay, so none may be listed there."""
    usage = yaml.safe_load((pristine / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    flags = usage["mandatory-flags"]["flags"]
    assert "--workflow-profile workflow/profiles/default" in flags and "--configfile" not in flags
