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
