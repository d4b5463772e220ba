"""The server's page at `/` in real headless Chromium (Debian's chromium + chromedriver, driven by
selenium): on a Base model, upload a reference voice through the form, pick it, type, click
Speak, wait for the status line to read `done`, check the streamed audio arrived (the same
samples the Python API's stream gives) and save a screenshot.

`scripts/install_browser.sh` (run by `scripts/test.sh`) installs the browser; outside CI a
machine without it skips this test, in CI (CI=true) it fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from server_harness import GREEDY, model, reference_voice, running_server, s16

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BASE = "random:tiny-base"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1000,1100",
]
SCREENSHOT = Path(__file__).parent.parent / "out" / "server_page.png"


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium/chromedriver missing: scripts/install_browser.sh should have installed them")
        pytest.skip("no /usr/bin/chromium + /usr/bin/chromedriver (run scripts/install_browser.sh)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="qwen3tts-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # the given driver: no download
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_page_uploads_a_voice_streams_and_reports_done(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ref = tmp_path / "reference.wav"
    reference_voice(ref)
    text, ref_text, frames = "Hello from the browser.", "These are the words of the reference.", 24
    with running_server(BASE, voices_dir=str(tmp_path / "voices")) as (url, service):
        browser.get(url + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
        assert browser.find_element(By.ID, "upload-card").is_displayed()
        browser.find_element(By.ID, "voice-file").send_keys(str(ref))
        browser.find_element(By.ID, "voice-name").send_keys("browser_voice")
        browser.find_element(By.ID, "voice-ref-text").send_keys(ref_text)
        browser.find_element(By.ID, "upload-button").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "upload-status"), "uploaded browser_voice"))
        assert Select(browser.find_element(By.ID, "voice")).first_selected_option.text == "browser_voice"
        box = browser.find_element(By.ID, "text")
        box.clear()
        box.send_keys(text)
        browser.find_element(By.TAG_NAME, "summary").click()
        browser.find_element(By.ID, "max-new-tokens").send_keys(str(frames))
        browser.find_element(By.ID, "greedy").click()
        browser.find_element(By.ID, "speak").click()
        WebDriverWait(browser, 600).until(lambda d: d.find_element(By.ID, "status").text.startswith(("done", "error")))
        status = browser.find_element(By.ID, "status").text
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
        stats = browser.execute_script("return window.qwen3tts")
        received = browser.execute_script(
            "return fetch(document.getElementById('result').src).then(r => r.arrayBuffer())"
            ".then(b => Array.from(new Int16Array(b.slice(44))))"
        )
    assert status.startswith("done"), status
    assert "first audio after" in status and "×RT" in status, status
    assert stats["done"] and stats["error"] is None and stats["ttfa"] is not None and stats["rt"] > 0, stats
    assert stats["samples"] > 0 and stats["samples"] % 1920 == 0 and stats["bytes"] == 2 * stats["samples"], stats
    assert len(received) == stats["samples"]
    want = s16(
        np.concatenate(
            [
                c
                for c, _ in model(BASE).stream_voice_clone(
                    text, ref_audio=str(ref), ref_text=ref_text, max_new_tokens=frames, **GREEDY
                )
            ]
        )
    )
    np.testing.assert_array_equal(np.asarray(received, np.int16), want)  # what the page played is the API's audio
    assert SCREENSHOT.stat().st_size > 10_000
