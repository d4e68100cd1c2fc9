"""The report in a real browser: headless Chromium (Debian's ``chromium`` and ``chromedriver``) through selenium.

Skips with a message where selenium, the browser or its driver is missing or cannot start.
The screenshot is written to ``$XAI_LOC_REPORT_SCREENSHOT`` (default: the test's tmp folder).
"""
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from test_report import make_study

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1300,2400")


@pytest.fixture(scope="module")
def browser():
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="xai-loc-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    except WebDriverException as err:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless chromium did not start: {str(err).splitlines()[0]}")
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory, zoo) -> Path:
    return make_study(tmp_path_factory.mktemp("browser") / "ré sults ünd spaces", zoo) / "report.html"


def _wait(driver, script: str, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


AUDIO = "return [...document.querySelectorAll('audio')].map(a => [a.readyState, a.duration, a.error && a.error.code])"
READY = "return [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)"


def test_the_report_opens_plays_and_explores_in_chromium(browser, report, tmp_path):
    from selenium.webdriver.support.ui import Select

    browser.get(report.as_uri())
    _wait(browser, "return document.readyState === 'complete' && [...document.images].every(i => i.complete)")
    images = browser.execute_script("return [...document.images].map(i => [i.alt, i.naturalWidth])")
    assert len(images) >= 5 and all(width > 0 for _, width in images), images
    _wait(browser, READY)
    audio = browser.execute_script(AUDIO)
    assert len(audio) == 2 and all(error is None and duration == pytest.approx(5120 / 16000, abs=1e-3)
                                   for _, duration, error in audio), audio

    explorer = browser.find_element("css selector", ".explorer")
    shown = explorer.get_attribute("data-shown")
    figure = explorer.find_element("css selector", "img.window-figure").get_attribute("src")
    sources = [a.get_attribute("src") for a in explorer.find_elements("css selector", "audio")]
    Select(explorer.find_element("css selector", "select.window")).select_by_index(3)
    Select(explorer.find_element("css selector", "select.pair")).select_by_value("0-15")
    assert explorer.get_attribute("data-shown") != shown and "window 10" in explorer.get_attribute("data-shown")
    assert explorer.find_element("css selector", "img.window-figure").get_attribute("src") != figure
    assert [a.get_attribute("src") for a in explorer.find_elements("css selector", "audio")] != sources
    assert "pair 0-15" in explorer.find_element("css selector", ".gcc-caption").text
    assert len(explorer.find_elements("css selector", "svg.gcc polyline")) == 2
    _wait(browser, READY)
    assert all(duration == pytest.approx(0.32, abs=1e-3) for _, duration, _ in browser.execute_script(AUDIO))
    _wait(browser, "return document.querySelector('img.window-figure').naturalWidth > 0")

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    browser.execute_script("arguments[0].scrollIntoView()", explorer)
    shot = Path(os.environ.get("XAI_LOC_REPORT_SCREENSHOT", tmp_path / "report.png"))
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
