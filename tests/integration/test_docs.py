"""The documentation site builds with --strict (no broken link or reference), its generated references hold
what the code holds (every config field, every command), and its index opens in headless Chromium offline."""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from plantpheno.cli import build_parser
from plantpheno.config import field_docs
from report_browser import CHROMIUM_ARGS, chromium_path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mkdocs build --strict`, as `make docs` runs it, with this checkout's sources first on the path."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(REPO / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def page_text(site: Path, page: str) -> str:
    """The page's HTML, entities decoded."""
    return html.unescape((site / page).read_text(encoding="utf-8"))


def visible_text(site: Path, page: str) -> str:
    """What a reader sees: the tags taken out first, then the entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", (site / page).read_text(encoding="utf-8")))


def test_config_reference_lists_every_field_that_config_docs_lists(site):
    text = page_text(site, "reference/config.html")
    missing = [name for name, *_ in field_docs() if f"<code>{name}</code>" not in text]
    assert not missing, f"fields of `plantpheno config docs` missing from the docs' config reference: {missing}"
    shown = visible_text(site, "reference/config.html")
    for name, _, _, description in field_docs():  # the meaning column too, as a reader sees it
        assert description.replace("`", "")[:50] in shown, name


def test_cli_reference_holds_every_command_and_its_options(site):
    text = page_text(site, "reference/cli.html")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, sub in commands.items():
        assert f"usage: plantpheno {name}" in text, name
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:  # internal options (a tuning worker's index) are not shown
                continue
            for flag in action.option_strings:
                assert flag in text, f"plantpheno {name} {flag}"


def test_api_reference_is_generated_from_the_docstrings(site):
    text = page_text(site, "reference/api.html")
    for name in ("plantpheno.api.runs.train", "plantpheno.api.runs.load_config", "plantpheno.api.models.load_model",
                 "plantpheno.api.models.Registry", "plantpheno.errors.PlantPhenoError"):
        assert f'id="{name}"' in text, name
    assert "A validated, frozen" in text  # load_config's docstring, rendered


def test_every_user_guide_page_and_the_benchmarks_are_built(site):
    for page in ("guide/data.html", "guide/recipes.html", "guide/traits.html", "guide/data-checks.html",
                 "guide/report.html", "guide/tracking.html", "guide/tuning.html", "guide/registry.html",
                 "guide/distributed.html", "guide/reliability.html", "benchmarks.html", "licences.html"):
        assert (site / page).is_file(), page
    assert "AGPL-3.0" in page_text(site, "licences.html")


def test_index_opens_offline_in_headless_chromium(site, tmp_path):
    from playwright.sync_api import sync_playwright

    import numpy as np
    from PIL import Image

    index = (site / "index.html").resolve()
    outside: list[str] = []
    errors: list[str] = []
    shot = tmp_path / "index.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)

            def route(r) -> None:  # the site's own files load; anything else is a request that leaves the machine
                url = r.request.url
                if url.startswith(site.resolve().as_uri()) or url.startswith("data:"):
                    r.continue_()
                else:
                    outside.append(url)
                    r.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(index.as_uri(), wait_until="load")
            title = page.title()
            images = page.evaluate("Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0])")
            nav = page.text_content("nav.md-nav--primary") or ""  # the site's navigation, folded or not
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert outside == [], f"the docs' index made requests outside the site: {outside}"
    assert errors == [], f"console errors: {errors}"
    assert "plantpheno" in title
    assert images and all(ok for _, ok in images), f"images not decoded: {images}"
    for entry in ("Data checks", "Configuration", "Benchmarks"):
        assert entry in nav, entry
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20, "the screenshot of the docs' index is blank"
