"""Open a report in a real headless Chromium (Debian's package, driven by Playwright) and check it as a person
would see it: no network request at all, no console error, every image decoded, a screenshot that is not blank."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def chromium_path() -> str:
    """Debian's chromium; a skip where it cannot exist, a failure in CI (its set-up installs it)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: `make test` (.ci/run) installs Debian's chromium as root")
        pytest.skip("Debian's chromium is not installed (`make test` installs it when run as root: apt-get install "
                    "chromium)")
    return found


@dataclass
class BrowserCheck:
    requests: list[str] = field(default_factory=list)  # every request the page made (blocked and counted)
    console_errors: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # {"src", "complete", "width"} per <img>
    screenshot: Path | None = None
    text: str = ""

    @property
    def undecoded(self) -> list[str]:
        return [i["src"] for i in self.images if not i["complete"] or i["width"] == 0]


def open_in_browser(report: Path, screenshot: Path) -> BrowserCheck:
    from playwright.sync_api import sync_playwright

    result = BrowserCheck(screenshot=screenshot)
    url = report.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)

            def block(route) -> None:  # every request other than the page itself is aborted and counted
                if route.request.url == url:
                    route.continue_()
                else:
                    result.requests.append(route.request.url)
                    route.abort()

            context.route("**/*", block)
            page = context.new_page()
            page.on("request", lambda r: r.url != url and not r.url.startswith("data:") and
                    r.url not in result.requests and result.requests.append(r.url))
            page.on("console", lambda m: m.type == "error" and result.console_errors.append(m.text))
            page.on("pageerror", lambda e: result.console_errors.append(str(e)))
            page.goto(url, wait_until="load")
            result.images = page.evaluate(
                "Array.from(document.images).map(i => ({src: i.src.slice(0, 40), complete: i.complete, "
                "width: i.naturalWidth}))")
            result.text = page.inner_text("body")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return result


def assert_report_ok(report: Path, screenshot: Path) -> BrowserCheck:
    """The checks of the issue, with what went wrong in the message."""
    import numpy as np
    from PIL import Image

    check = open_in_browser(report, screenshot)
    assert check.requests == [], f"the report made network requests: {check.requests}"
    assert check.console_errors == [], f"console errors: {check.console_errors}"
    assert check.images, "the report shows no image"
    assert check.undecoded == [], f"images not decoded: {check.undecoded}"
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.05, "the screenshot is blank"
    return check
