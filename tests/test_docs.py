"""The docs: the site builds strictly (no warning), the generated pages match the code, and the README
stays what a visitor reads (short, every link alive)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paric import reference_docs

REPO = Path(__file__).resolve().parents[1]


def test_generated_reference_pages_match_the_code():
    """Regenerate with ``python -m paric.reference_docs docs/reference`` when this fails."""
    assert (REPO / "docs" / "reference" / "config.md").read_text() == reference_docs.config_page()
    assert (REPO / "docs" / "reference" / "registries.md").read_text() == reference_docs.registries_page()
    page = reference_docs.config_page()
    assert "| `maps.K` |" in page and "| `train.seeds` |" in page
    assert "| `background_swap` |" in reference_docs.registries_page()


def test_docs_build_strictly_without_warnings(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.fail("mkdocs is not installed: it is in the test extras (pip install -e '.[test]')")
    proc = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    for page in ("index.html", "quickstart/index.html", "reference/config/index.html", "results/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


def test_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links and all((REPO / link).exists() for link in links if "://" not in link), links
    nav = (REPO / "mkdocs.yml").read_text()
    for page in (REPO / "docs").rglob("*.md"):  # every page is reachable from the site's navigation
        assert str(page.relative_to(REPO / "docs")) in nav, page
