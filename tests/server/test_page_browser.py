"""The search page in a real headless Chromium (Debian's chromium + chromedriver, via selenium):
upload a crop, see the ranked identities render with their thumbnails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from live_server import serve
from server.app import create_app
from server.settings import Settings
from service_data import crop_bytes, fill_gallery

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_available() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


if not _browser_available():
    if os.environ.get("REID_REQUIRE_BROWSER") == "1":
        pytest.fail("REID_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed", pytrace=False)
    pytest.skip("chromium and chromedriver are not installed", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_upload_shows_ranked_identities(make_settings: Callable[..., Settings], browser, tmp_path: Path) -> None:
    with TestClient(create_app(make_settings())) as client:
        fill_gallery(client)
    query = tmp_path / "query.png"
    query.write_bytes(crop_bytes(2, variant=77))
    with serve(create_app(make_settings())) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "k-identities").clear()
        browser.find_element(By.ID, "k-identities").send_keys("3")
        browser.find_element(By.ID, "exclude-cameras").send_keys("1")
        browser.find_element(By.ID, "file-input").send_keys(str(query))
        wait = WebDriverWait(browser, 20)
        try:
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "article.identity")))
        except Exception:
            raise AssertionError(f"no results; status line: {browser.find_element(By.ID, 'status').text!r}; "
                                 f"console: {browser.get_log('browser')}") from None
        cards = browser.find_elements(By.CSS_SELECTOR, "article.identity")
        assert [c.get_attribute("data-pid") for c in cards][:1] == ["2"] and len(cards) == 3
        assert "identity 2" in cards[0].find_element(By.TAG_NAME, "h2").text
        captions = [f.text for f in browser.find_elements(By.CSS_SELECTOR, "figcaption")]
        assert captions and all("· c2" in c for c in captions)  # camera 1 (the _c1 files) excluded
        # Thumbnails really loaded from /gallery/{id}/image.
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('article.identity img')]"
            ".every(img => img.complete && img.naturalWidth > 0)"))
        assert browser.find_element(By.ID, "query-preview").is_displayed()
        assert "ms" in browser.find_element(By.ID, "status").text

        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not an image at all")
        browser.find_element(By.ID, "file-input").send_keys(str(bad))
        wait.until(lambda d: "Error 400" in d.find_element(By.ID, "status").text)
        assert browser.find_elements(By.CSS_SELECTOR, "article.identity") == []


@pytest.mark.slow
def test_protected_reads_ask_for_a_key_kept_for_the_tab(make_settings: Callable[..., Settings], browser,
                                                        tmp_path: Path) -> None:
    read_key = "page-read-key-0123456789"
    settings = make_settings(read_key=read_key)
    with TestClient(create_app(settings)) as client:
        fill_gallery(client)
    query = tmp_path / "query.png"
    query.write_bytes(crop_bytes(3, variant=78))
    with serve(create_app(settings)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        browser.find_element(By.ID, "file-input").send_keys(str(query))
        wait.until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
        assert "API key" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "key-input").send_keys("not-the-key")
        browser.find_element(By.ID, "key-button").click()
        wait.until(lambda d: "refused" in d.find_element(By.ID, "status").text)
        assert browser.find_elements(By.CSS_SELECTOR, "article.identity") == []
        browser.find_element(By.ID, "key-input").clear()
        browser.find_element(By.ID, "key-input").send_keys(read_key)
        browser.find_element(By.ID, "key-button").click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "article.identity")))
        assert browser.find_elements(By.CSS_SELECTOR, "article.identity")[0].get_attribute("data-pid") == "3"
        # Thumbnails were fetched with the key (an <img src> alone would get 401) and shown.
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('article.identity img')]"
            ".every(img => img.complete && img.naturalWidth > 0 && img.src.startsWith('blob:'))"))
        assert browser.execute_script("return sessionStorage.getItem('reid-api-key')") == read_key
        assert browser.execute_script("return localStorage.length") == 0
        assert not [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
        browser.find_element(By.ID, "forget-key").click()
        assert browser.execute_script("return sessionStorage.getItem('reid-api-key')") is None


@pytest.mark.slow
def test_several_crops_and_rerank_from_the_page(make_settings: Callable[..., Settings], browser,
                                                tmp_path: Path) -> None:
    """Two crops of one person chosen together are one fused query; the re-rank box asks for
    k-reciprocal re-ranking, and the status line says both."""
    with TestClient(create_app(make_settings())) as client:
        fill_gallery(client)
    crops = [tmp_path / f"q{i}.png" for i in range(2)]
    for i, path in enumerate(crops):
        path.write_bytes(crop_bytes(2, variant=90 + i))
    with serve(create_app(make_settings())) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "rerank").click()
        browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in crops))
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: "crops fused" in d.find_element(By.ID, "status").text)
        status = browser.find_element(By.ID, "status").text
        assert "2 crops fused" in status and "re-ranked: k-reciprocal" in status and "k1 20" in status
        assert browser.find_element(By.ID, "crop-count").text == "+ 1 more crop of this person"
        cards = browser.find_elements(By.CSS_SELECTOR, "article.identity")
        assert cards and cards[0].get_attribute("data-pid") == "2"
