"""Redraw the README's app screenshots with the bundled model:
starts ``app.py`` on a free local port, uploads a committed validation
frame in headless Chromium (Playwright; Debian's /usr/bin/chromium) and
saves docs/app_identify.jpg, app_review.jpg, app_sample.jpg,
app_species.jpg and app_embed.jpg.

    python docs/screenshots.py
"""
from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
FRAME = sorted((REPO / "plankton_app" / "examples" / "frames").glob("*.jpg"))[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save(page, name: str) -> None:
    png = page.screenshot(clip={"x": 0, "y": 0, "width": 1400, "height": 1100})
    Image.open(io.BytesIO(png)).convert("RGB").save(REPO / "docs" / name, quality=82, optimize=True)


def main() -> None:
    port = _free_port()
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files(str(FRAME))
            page.wait_for_selector("#objects img", state="attached")
            page.wait_for_function("() => document.querySelector('#status').innerText.includes('object')")
            time.sleep(1)
            _save(page, "app_identify.jpg")
            page.get_by_role("tab", name="Review").click()
            page.wait_for_selector("#review-table img", state="attached")
            time.sleep(1)
            _save(page, "app_review.jpg")
            page.get_by_role("tab", name="Sample").click()
            page.locator("#um-per-px :is(input, textarea)").fill("0.65")  # an example scale and volume, as in the README's command
            page.locator("#volume-ul :is(input, textarea)").fill("0.1")
            page.locator("#volume-ul :is(input, textarea)").press("Enter")
            page.wait_for_function("() => document.querySelector('#sample-note').innerText.includes('ml in all')")
            page.wait_for_selector("#sizes .js-plotly-plot")
            time.sleep(2)
            _save(page, "app_sample.jpg")
            page.get_by_role("tab", name="Species").click()
            page.wait_for_selector("#species-gallery img", state="attached")
            time.sleep(1)
            _save(page, "app_species.jpg")
            page.get_by_role("tab", name="Embeddings").click()
            page.wait_for_selector("#embedding-plot .js-plotly-plot")
            time.sleep(2)
            _save(page, "app_embed.jpg")
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    main()
