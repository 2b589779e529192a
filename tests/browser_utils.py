"""What the browser tests share: a headless Chromium found on the PATH
(never ``playwright install``), one browser per module, and small waits.
Importing it skips the module when there is no Chromium."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PLANKTON_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable") if (found := shutil.which(name))), "")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("PLANKTON_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")

if not CHROMIUM or not Path(CHROMIUM).is_file():
    pytest.skip("no Chromium on the PATH (apt-get install chromium, or set PLANKTON_CHROMIUM)", allow_module_level=True)
from playwright import sync_api  # noqa: E402  (pinned in requirements-test.txt)


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module: Playwright's sync API runs one event loop at a time."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _status_count(page, selector: str) -> int:
    import re

    return int(re.search(r"(\d+) objects?", page.locator(selector).inner_text())[1])


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _wait_text(page, selector: str, text: str, timeout: float = 30_000) -> None:
    """Wait until ``selector``'s text includes ``text``; on timeout, say what it showed."""
    try:
        page.wait_for_function("([s, t]) => document.querySelector(s).innerText.includes(t)", arg=[selector, text], timeout=timeout)
    except sync_api.TimeoutError:
        raise AssertionError(f"{selector} never showed {text!r}; it shows: {page.locator(selector).inner_text()!r}") from None


def _metric_thresholds(page) -> list[float]:
    """The threshold column of the Model tab's per-species table (species rows only)."""
    out = []
    page.locator("#metrics .virtual-table-viewport").evaluate("el => el.scrollTop = 0")
    for row in page.locator("#metrics .virtual-row").all():
        cells = [c.strip() for c in row.inner_text().replace("\t", "\n").split("\n") if c.strip()]
        if len(cells) == 6 and " avg" not in cells[0]:  # species, precision, recall, F1, support, threshold (none without a prototype)
            out.append(float(cells[5]))
    return out
