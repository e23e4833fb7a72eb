"""The documentation cannot go stale unnoticed: the site builds with ``mkdocs build --strict`` (a
broken link, a missing anchor or a page left out of the navigation fails), README stays a front
page, and every page of docs/ is in the navigation."""

from __future__ import annotations

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


def test_the_docs_site_builds_in_strict_mode(pristine: Path, tmp_path: Path):
    proc = _mkdocs(pristine, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nav = yaml.safe_load((pristine / "mkdocs.yml").read_text())["nav"]
    for entry in nav:
        (page,) = entry.values()
        assert (tmp_path / "site" / page.replace(".md", "") / "index.html").exists() or page == "index.md"


def test_a_broken_link_fails_the_build(pristine: Path, tmp_path: Path):
    page = pristine / "docs" / "metrics.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    proc = _mkdocs(pristine, tmp_path / "site")
    assert proc.returncode != 0 and "no-such-page.md" in proc.stdout + proc.stderr


def test_every_docs_page_is_in_the_navigation(pristine: Path):
    nav = yaml.safe_load((pristine / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
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
