"""The try-it page in a real headless Chromium against a real `capability-service serve` process.

The browser is the system's Chromium (Debian's `chromium` package), driven by Playwright; Playwright's
own browser downloads are never used. Without Chromium the tests skip, except in CI (`CI=true`), where
that is a failure. A screenshot of the finished page is kept in `PLAYGROUND_SCREENSHOT_DIR` when set,
else in the test's temporary directory.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_api

from tests.support.data import API_KEY, AUTH, DATA
from tests.support.servers import free_port, in_ci, wait_for_port

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The two real photos dropped on the page: a 10 MP camera photo and a portrait.
PHOTOS = (("camera_3648x2736.jpg", "image/jpeg"), ("grace_hopper.jpg", "image/jpeg"))
# Products for background replacement (one cut out with its own alpha), and a truncated file.
PRODUCTS = (("Minduka_Present_Blue_Pack.png", "image/png"), ("rocket.jpg", "image/jpeg"))
BROKEN = ("broken.jpg", "image/jpeg")
JOB_TIMEOUT_MS = 180_000


def chromium_path() -> str:
    """The system Chromium; a skip without it, a failure in CI."""
    for candidate in (os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    message = "Chromium is not installed (Debian package `chromium`; .ci/run installs it)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Service:
    url: str
    results: Path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`capability-service serve` on a free port, development mode (the page is on by default)."""
    tmp = tmp_path_factory.mktemp("playground-service")
    port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name not in ("ENVIRONMENT", "PLAYGROUND_ENABLED")},
        "API_KEYS": API_KEY,
        "LOCAL_STORAGE_DIR": str(tmp / "results"),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "PLUGINS_CONFIG": str(tmp / "none.yaml"),
        "AI_API_KEY": "",
        "OPENAI_API_KEY": "",
        "LOG_LEVEL": "WARNING",
    }
    env = {name: value for name, value in env.items() if value != ""}
    command = [sys.executable, "-m", "capability_service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp / "service.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60)
        yield Service(url=f"http://127.0.0.1:{port}", results=tmp / "results")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
    text = (tmp / "service.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, service: Service) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    # Nothing may leave the service's own origin: no CDN, no font, no tracker.
    foreign: list[str] = []
    opened.on("request", lambda request: foreign.append(request.url) if not _own(request.url, service) else None)
    try:
        yield opened
    finally:
        context.close()
    assert foreign == []
    assert [problem for problem in problems if "401" not in problem] == []


def _own(url: str, service: Service) -> bool:
    return url.startswith(service.url + "/") or url.startswith(("data:", "blob:"))


def screenshot_dir(tmp_path: Path) -> Path:
    configured = os.environ.get("PLAYGROUND_SCREENSHOT_DIR")
    folder = Path(configured) if configured else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def enter_key(page: Any, service: Service, key: str = API_KEY) -> None:
    page.goto(f"{service.url}/playground")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


def photo_bytes(name: str) -> bytes:
    if name == BROKEN[0]:
        return (DATA / "grace_hopper.jpg").read_bytes()[:5000]
    return (DATA / name).read_bytes()


def drop_photos(page: Any, photos: tuple[tuple[str, str], ...]) -> None:
    """Drop real files on the drop zone, as a person dragging them from a file manager does."""
    files = [
        {"name": name, "type": mime, "data": base64.b64encode(photo_bytes(name)).decode()} for name, mime in photos
    ]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const file of files) {
                const bytes = Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], file.name, { type: file.type }));
            }
            return transfer;
        }""",
        files,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})


def watch_messages(page: Any) -> None:
    """Record every text the job message line shows, to tell live progress from a final answer."""
    page.evaluate(
        """() => {
            window.seenMessages = [];
            const line = document.getElementById("job-message");
            new MutationObserver(() => window.seenMessages.push(line.textContent))
                .observe(line, { childList: true, characterData: true, subtree: true });
        }"""
    )


def run_and_wait(page: Any) -> str:
    watch_messages(page)
    page.click("#run-job")
    page.wait_for_selector('#results[data-done="true"]', timeout=JOB_TIMEOUT_MS)
    job_id: str = page.text_content("#job-id")
    return job_id


def text_of(card: Any, selector: str) -> str:
    text: str = card.query_selector(selector).text_content()
    return text


def field_values(card: Any) -> dict[str, str]:
    values: dict[str, str] = card.evaluate(
        """(card) => Object.fromEntries([...card.querySelectorAll("[data-field]")]
            .map((node) => [node.dataset.field, node.dataset.value]))"""
    )
    return values


def check_cards_against_the_api(
    page: Any, service: Service, job_id: str, photos: tuple[tuple[str, str], ...]
) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{service.url}/api/v1/ai/job/{job_id}", headers=AUTH).json()
    errors = {error["index"]: error["error"] for error in result["errors"]}
    cards = page.query_selector_all("#results .card")
    assert len(cards) == len(photos)
    for card, image, (name, _mime) in zip(cards, result["metadata"]["images"], photos, strict=True):
        assert card.get_attribute("data-state") == image["status"]
        assert text_of(card, ".badge") == image["status"]
        if name == BROKEN[0]:
            # A failed image shows its own reason, as the API gives it.
            assert image["status"] == "failed"
            assert text_of(card, ".image-error") == f"Failed: {errors[image['index']]}"
            assert card.query_selector("a.download").is_hidden()
            continue
        assert image["status"] == "succeeded", result["errors"]
        values = field_values(card)
        size = len(photo_bytes(name))
        assert values["result-width"] == str(image["width"])
        assert values["result-height"] == str(image["height"])
        assert values["result-bytes"] == str(image["bytes"])
        assert values["result-format"] == image["format"]
        assert values["source-bytes"] == str(size)
        assert values["saved-bytes"] == str(size - image["bytes"])
        # The result image itself loaded, at the size the API reports.
        after = card.query_selector("img.after")
        assert after.evaluate("(img) => img.complete && img.naturalWidth") == image["width"]
        assert after.evaluate("(img) => img.naturalHeight") == image["height"]
        assert after.get_attribute("src") == result["result_image_urls"][image["index"]]
        download = card.query_selector("a.download")
        assert download.get_attribute("href") == result["result_image_urls"][image["index"]]
        assert download.get_attribute("download") == f"{Path(name).stem}.{image['format']}"
    return result


def test_a_batch_optimization_and_a_background_replacement_from_the_page(
    page: Any, service: Service, tmp_path: Path
) -> None:
    enter_key(page, service)
    page.wait_for_selector("#key-status.ok")
    assert page.evaluate("() => sessionStorage.length") == 1
    assert page.input_value("#api-key") == ""

    # Batch optimization: the form comes from the API's schema, with its defaults and limits.
    page.select_option("#job-type", "batch_optimization")
    assert page.input_value("#option-maxSize") == "1920"
    assert page.get_attribute("#option-maxSize", "max") == "10000"
    assert "Allowed 16–10000, default 1920." in page.text_content("#option-maxSize-help")
    page.fill("#option-maxSize", "800")
    page.select_option("#option-format", "webp")
    drop_photos(page, PHOTOS)
    assert page.locator("#source-list li").count() == 2
    job_id = run_and_wait(page)
    assert page.get_attribute("#results", "data-state") == "completed"
    # Progress came live from the stream, before the final answer.
    seen: list[str] = page.evaluate("() => window.seenMessages")
    assert any(text.startswith(("Processing", "Processed")) for text in seen), seen
    assert page.evaluate("() => document.getElementById('job-progress').value") == 100
    assert page.text_content("#job-counter") == "2/2"
    result = check_cards_against_the_api(page, service, job_id, PHOTOS)
    assert result["metadata"]["config"]["maxSize"] == 800
    for image in result["metadata"]["images"]:
        assert max(image["width"], image["height"]) <= 800
    assert page.text_content("#job-message") == "Completed: 2 of 2 images processed"
    assert page.text_content("#job-summary").startswith("2 of 2 done · ")

    # Download all: one archive named after the dropped files.
    with page.expect_download() as download:
        page.click("#download-all")
    archive_path = tmp_path / "results.zip"
    download.value.save_as(archive_path)
    archive = zipfile.ZipFile(io.BytesIO(archive_path.read_bytes()))
    assert archive.namelist() == ["camera_3648x2736.webp", "grace_hopper.webp"]

    # Background replacement: prompt, mode, padding and shadow, set with the keyboard.
    for _ in PHOTOS:
        page.click("#source-list li button")
    assert page.locator("#source-list li").count() == 0
    drop_photos(page, (*PRODUCTS, BROKEN))
    page.select_option("#job-type", "background_replacement")
    assert page.is_disabled('#option-mode option[value="generative"]')
    page.fill("#option-backgroundPrompt", "light grey studio")
    assert page.input_value("#option-padding") == "0.08"
    page.focus("#option-padding")
    for _ in range(7):
        page.keyboard.press("ArrowRight")
    assert page.input_value("#option-padding") == "0.15"
    page.focus("#option-shadow")
    page.keyboard.press("Space")
    assert not page.is_checked("#option-shadow")
    job_id = run_and_wait(page)
    result = check_cards_against_the_api(page, service, job_id, (*PRODUCTS, BROKEN))
    assert result["status"] == "completed"
    assert result["metadata"]["config"]["padding"] == 0.15
    assert result["metadata"]["config"]["shadow"] is False
    assert page.text_content("#job-message") == "Completed with 1 of 3 images failed"
    assert page.text_content("#job-summary").startswith("2 of 3 done · ")
    for card in page.query_selector_all("#results .card")[:2]:
        assert field_values(card)["result-width"] == "1500"
        details = text_of(card, ".details")
        assert "mode composite" in details and "padding 0.15" in details and "shadow off" in details
        assert "background: " in details
        # Results sit on a light checkerboard, so transparency shows.
        pane = card.query_selector(".after-pane")
        assert "conic-gradient" in pane.evaluate("(node) => getComputedStyle(node).backgroundImage")
    # The before/after slider moves with the keyboard.
    slider = page.query_selector("#results .card .slider")
    slider.focus()
    page.keyboard.press("End")
    assert slider.evaluate("(node) => node.closest('.compare').style.getPropertyValue('--split')") == "100%"
    page.click("#results .card .view-toggle")
    assert page.get_attribute("#results .card .compare", "data-mode") == "side"
    page.screenshot(path=str(screenshot_dir(tmp_path) / "playground.png"), full_page=True)


def test_a_long_job_is_cancelled_from_the_page(page: Any, service: Service, tmp_path: Path) -> None:
    enter_key(page, service)
    page.wait_for_selector("#key-status.ok")
    page.select_option("#job-type", "image_enhancement")
    # The file picker's path: six 10 MP photos, each a few seconds of enhancement.
    photo = (DATA / "camera_3648x2736.jpg").read_bytes()
    files = [{"name": f"shot-{n}.jpg", "mimeType": "image/jpeg", "buffer": photo} for n in range(6)]
    page.set_input_files("#file-input", files)
    assert page.locator("#source-list li").count() == 6
    page.click("#run-job")
    page.wait_for_selector('#results .card[data-state="processing"]', timeout=JOB_TIMEOUT_MS)
    page.click("#cancel-job")
    page.wait_for_selector('#results[data-done="true"]', timeout=JOB_TIMEOUT_MS)
    assert page.get_attribute("#results", "data-state") == "cancelled"
    job_id = page.text_content("#job-id")
    status = httpx.get(f"{service.url}/api/v1/ai/job/{job_id}/status", headers=AUTH).json()
    assert status["status"] == "cancelled"
    assert page.text_content("#job-message") == status["message"]
    states = [card.get_attribute("data-state") for card in page.query_selector_all("#results .card")]
    assert states.count("cancelled") >= 1
    assert set(states) <= {"succeeded", "cancelled"}
    assert page.is_disabled("#cancel-job")
    assert not page.is_disabled("#run-job")


def test_a_wrong_key_gets_a_clear_message(page: Any, service: Service) -> None:
    enter_key(page, service, "wrong-key-0123456789")
    page.wait_for_selector("#key-status:has-text('refused')")
    assert page.text_content("#key-status") == (
        "The service refused the API key (invalid API key). Enter a valid key in step 1."
    )
    assert page.evaluate("() => sessionStorage.length") == 0
    assert page.is_disabled("#job-type")
    assert page.evaluate("() => document.activeElement.id") == "api-key"

    # A key that stops working between steps is reported where the job is submitted.
    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#key-status.ok")
    drop_photos(page, PHOTOS[1:])
    page.evaluate("(key) => sessionStorage.setItem('capability-service.playground.api-key', key)", "revoked-key-0123")
    page.click("#run-job")
    page.wait_for_selector("#job-error:has-text('refused')")
    assert "The job was not accepted: The service refused the API key (invalid API key)" in page.text_content(
        "#job-error"
    )


def test_the_page_fits_a_phone_and_works_from_the_keyboard(browser: Any, service: Service, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        phone.goto(f"{service.url}/playground")
        # The key field has the focus on load; Enter submits it.
        assert phone.evaluate("() => document.activeElement.id") == "api-key"
        phone.keyboard.type(API_KEY)
        phone.keyboard.press("Enter")
        phone.wait_for_selector("#key-status.ok")
        drop_photos(phone, PHOTOS[1:])
        assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
        # Tab reaches the run button; Enter starts the job.
        for _ in range(40):
            phone.keyboard.press("Tab")
            if phone.evaluate("() => document.activeElement.id") == "run-job":
                break
        assert phone.evaluate("() => document.activeElement.id") == "run-job"
        phone.keyboard.press("Enter")
        phone.wait_for_selector('#results[data-done="true"]', timeout=JOB_TIMEOUT_MS)
        assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
        font_px = phone.evaluate("() => parseFloat(getComputedStyle(document.querySelector('.figures')).fontSize)")
        assert font_px >= 14
        phone.screenshot(path=str(screenshot_dir(tmp_path) / "playground-phone.png"), full_page=True)
    finally:
        context.close()
