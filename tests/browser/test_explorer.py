"""The explorer page and /docs in a real browser: Debian's Chromium, driven by Playwright, against a live
``python -m service`` on 127.0.0.1.

Requests to any other host are refused by the tests (and recorded): the page and the docs must work
on a machine with no internet. Screenshots go to the test's temporary directory, or to
``$CNN_SCREENSHOT_DIR`` when set (the README's picture is made that way).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import png_bytes
from tests.reliability.servers import ServerProcess, running_server

CHROMIUM = Path(os.environ.get("CNN_CHROMIUM", "/usr/bin/chromium"))
# As root, Chromium needs --no-sandbox; the others keep it from reaching for Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (make test does)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def server(bundled_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("explorer") / "server.log"
    with running_server(bundled_repository, log, {"CNN_POLL_INTERVAL_S": "0"}) as process:
        yield process


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("CNN_SCREENSHOT_DIR")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Page:
    """A fresh browser page that refuses every request to another host and records console errors."""

    def __init__(self, browser, width: int = 1100, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.route("**/*", self._local_only)

    def _local_only(self, route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort("internetdisconnected")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.close()


def _upload(page, path: Path) -> None:
    page.set_input_files("#file", str(path))


def _natural_width(page, selector: str) -> int:
    return page.eval_on_selector(selector, "img => img.complete ? img.naturalWidth : 0")


def _wait_for_image(page, selector: str, previous_src: str | None = None) -> str:
    """Wait until the image is loaded (and, if given, no longer the previous one); return its src."""
    page.wait_for_function(
        "([selector, previous]) => { const img = document.querySelector(selector);"
        " return img && img.complete && img.naturalWidth > 0 && img.src !== previous; }",
        arg=[selector, previous_src or ""],
    )
    return page.eval_on_selector(selector, "img => img.src")


def _image_pixels(page, selector: str) -> np.ndarray:
    """The pixels of a loaded <img>, read back through a canvas."""
    data = page.eval_on_selector(
        selector,
        """img => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
        c.height = img.naturalHeight; const x = c.getContext('2d'); x.drawImage(img, 0, 0);
        return c.toDataURL('image/png'); }""",
    )
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("L"))


def test_upload_shows_the_apis_class_maps_heatmap_and_architecture(page, server, fashion, tmp_path, screenshots):
    image = fashion.test.images[13]  # a dress
    path = tmp_path / "dress.png"
    path.write_bytes(png_bytes(image))
    expected = httpx.post(
        f"{server.base_url}/api/v1/models/fashion_cnn/predict", files={"files": ("dress.png", path.read_bytes())}
    ).json()["predictions"][0]

    page.page.goto(server.base_url + "/")
    page.page.wait_for_selector("#model option", state="attached")
    _upload(page.page, path)
    page.page.wait_for_selector("#prediction-card:not([hidden])")
    shown = page.page.locator("#bars li .label").first.inner_text()
    assert shown == expected["label"]

    heatmap_src = _wait_for_image(page.page, "#heatmap")
    grid_src = _wait_for_image(page.page, "#grid")
    assert _natural_width(page.page, "#heatmap") >= 280
    assert _natural_width(page.page, "#grid") > 0
    assert heatmap_src.startswith("blob:") and grid_src.startswith("blob:")
    page.page.wait_for_selector("#explain-card:not([hidden])")
    assert page.page.locator("#tiles button").count() == 64  # conv1: one button per map

    summary = httpx.get(f"{server.base_url}/api/v1/models/fashion_cnn/summary").json()
    rows = page.page.locator("#arch tbody tr")
    assert rows.count() == len(summary["layers"])
    assert f"{summary['total_params']:,}" in page.page.locator("#arch tfoot").inner_text()
    page.page.screenshot(path=str(screenshots / "explorer.png"), full_page=True)

    # Another layer: a different grid, with one tile per map of that layer.
    page.page.select_option("#layer", "pool3")
    new_grid = _wait_for_image(page.page, "#grid", grid_src)
    assert new_grid != grid_src
    page.page.wait_for_function("document.querySelectorAll('#tiles button').length === 256")
    # Another method: a different heatmap.
    before = _image_pixels(page.page, "#heatmap")
    page.page.select_option("#method", "occlusion")
    _wait_for_image(page.page, "#heatmap", heatmap_src)
    assert not np.array_equal(before, _image_pixels(page.page, "#heatmap"))
    assert page.page.locator("#cam-layer").is_hidden()
    assert page.errors == [] and page.outside == []


def test_a_map_enlarges_on_click_and_keyboard(page, server):
    page.page.goto(server.base_url + "/")
    page.page.wait_for_selector("#samples button")
    page.page.locator("#samples button").first.focus()
    page.page.keyboard.press("Enter")  # a sample, chosen with the keyboard
    page.page.wait_for_selector("#maps-card:not([hidden])")
    page.page.wait_for_selector("#tiles button")
    page.page.locator("#tiles button").nth(3).click()
    dialog = page.page.locator("#zoom")
    assert dialog.is_visible()
    assert "map 4 of 64" in page.page.locator("#zoom-title").inner_text()
    zoomed = page.page.eval_on_selector(
        "#zoom-canvas", "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return [c.width, s]; }",
    )  # fmt: skip
    assert zoomed[0] >= 224 and zoomed[1] > 0  # upscaled, and not blank
    page.page.keyboard.press("Escape")
    assert not dialog.is_visible()
    page.page.locator("#tiles button").nth(5).focus()
    page.page.keyboard.press("Enter")
    assert "map 6 of 64" in page.page.locator("#zoom-title").inner_text()
    assert page.errors == [] and page.outside == []


def test_an_invalid_file_shows_the_apis_error(page, server, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not an image")
    api_error = httpx.post(
        f"{server.base_url}/api/v1/models/fashion_cnn/predict", files={"files": ("notes.png", path.read_bytes())}
    ).json()["error"]

    page.page.goto(server.base_url + "/")
    page.page.wait_for_selector("#model option", state="attached")
    _upload(page.page, path)
    page.page.wait_for_selector("#error:not([hidden])")
    assert api_error in page.page.locator("#error").inner_text()
    assert page.page.locator("#prediction-card").is_hidden()
    # The browser logs the 400 response itself; nothing else may go wrong.
    assert [e for e in page.errors if "status of 400" not in e] == []


def test_the_page_is_usable_at_phone_width(browser, server, screenshots):
    narrow = Page(browser, width=390, height=844)
    try:
        narrow.page.goto(server.base_url + "/")
        narrow.page.wait_for_selector("#samples button")
        narrow.page.locator("#samples button").nth(9).click()
        narrow.page.wait_for_selector("#maps-card:not([hidden])")
        narrow.page.wait_for_selector("#explain-card:not([hidden])")
        width = narrow.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing wider than the screen; the table scrolls inside its box
        narrow.page.screenshot(path=str(screenshots / "explorer-phone.png"), full_page=True)
        assert narrow.errors == [] and narrow.outside == []
    finally:
        narrow.close()


def test_the_page_asks_for_the_api_key_and_sends_it(browser, bundled_repository, tmp_path):
    env = {"CNN_API_KEY": "s3cret", "CNN_POLL_INTERVAL_S": "0", "CNN_MODELS": '["lenet5"]'}
    with running_server(bundled_repository, tmp_path / "server.log", env) as keyed:
        guarded = Page(browser)
        try:
            guarded.page.goto(keyed.base_url + "/")
            guarded.page.wait_for_selector("#error:not([hidden])")
            assert "API key" in guarded.page.locator("#error").inner_text()
            assert guarded.page.locator("#key-box").get_attribute("open") is not None
            guarded.page.fill("#api-key", "s3cret")
            guarded.page.click("#key-form button")
            guarded.page.wait_for_selector("#model option", state="attached")
            assert guarded.page.locator("#error").is_hidden()
            guarded.page.locator("#samples button").first.click()
            guarded.page.wait_for_selector("#prediction-card:not([hidden])")
            assert guarded.page.locator("#bars li").count() == 5
        finally:
            guarded.close()


def test_the_docs_render_with_the_network_cut_off(page, server):
    paths = httpx.get(f"{server.base_url}/openapi.json").json()["paths"]
    operations = sum(len(methods) for methods in paths.values())
    page.page.goto(server.base_url + "/docs")
    page.page.wait_for_selector(".opblock")
    assert page.page.locator(".opblock").count() >= operations  # an operation with two tags shows twice
    assert page.page.locator(".opblock-summary-path[data-path='/api/v1/models/{name}/explain']").count() == 1
    assert page.outside == []  # Swagger UI's script, style and icon came from this server
    assert page.errors == []
    assert httpx.get(f"{server.base_url}/redoc").status_code == 404  # not served: it needs its vendor's site


def test_a_residual_network_shows_its_branches_and_grad_cam_layers(page, server, fashion, tmp_path):
    """fashion_resnet: the architecture table names each merge's inputs; Grad-CAM offers its spatial layers."""
    path = tmp_path / "boot.png"
    path.write_bytes(png_bytes(fashion.test.images[0]))  # an ankle boot
    detail = httpx.get(f"{server.base_url}/api/v1/models/fashion_resnet").json()
    summary = httpx.get(f"{server.base_url}/api/v1/models/fashion_resnet/summary").json()

    page.page.goto(server.base_url + "/")
    page.page.wait_for_selector("#model option", state="attached")
    page.page.select_option("#model", "fashion_resnet")
    page.page.wait_for_function(
        "n => document.querySelectorAll('#arch tbody tr').length === n", arg=len(summary["layers"])
    )
    merge = page.page.locator("#arch tbody tr", has=page.page.locator("th", has_text="stage2_block1_add"))
    assert merge.locator("td").last.inner_text() == "stage2_block1_bn2, stage2_block1_proj_bn"
    _upload(page.page, path)
    page.page.wait_for_selector("#explain-card:not([hidden])")
    _wait_for_image(page.page, "#heatmap")
    options = page.page.eval_on_selector_all("#cam-layer option", "options => options.map(o => o.value)")
    assert options == detail["gradcam_layers"] and page.page.input_value("#cam-layer") == detail["gradcam_default"]
    assert page.errors == [] and page.outside == []


def test_a_page_of_another_site_cannot_unload_a_model(browser, server, tmp_path: Path):
    """What a malicious page can make a browser send (simple cross-site requests, which need no preflight)
    to a default server, where model control is allowed on the loopback bind without a key."""
    import functools
    import http.server
    import threading

    (tmp_path / "index.html").write_text("<!doctype html><title>another site</title><p>hello")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other_site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other_site.serve_forever, daemon=True).start()
    page = Page(browser)
    try:
        page.page.goto(f"http://localhost:{other_site.server_port}/")
        sent = page.page.evaluate(
            """async (url) => {
                const tries = [
                    {method: "POST", mode: "no-cors", body: "x"},
                    {method: "POST", mode: "no-cors", body: new Blob(["{}"])},
                    {method: "POST", mode: "no-cors", body: new URLSearchParams({a: "1"})},
                ];
                let sent = 0;
                for (const init of tries) { try { await fetch(url, init); sent += 1; } catch (e) {} }
                return sent;
            }""",
            f"{server.base_url}/v2/repository/models/fashion_cnn/unload",
        )
        assert sent == 3  # the browser sent all three; the server must have refused them
        assert httpx.get(f"{server.base_url}/v2/models/fashion_cnn/ready", timeout=10).status_code == 200
    finally:
        page.context.close()
        other_site.shutdown()


def test_the_rollout_card_shows_the_split_and_the_shadows_agreement(
    browser, bundled_repository, tmp_path, fashion, screenshots
):
    """lenet5 published as version 2 of fashion_cnn, taking 25% of the traffic and shadowing the rest."""
    import json

    from tests.lifecycle_helpers import publish

    root = tmp_path / "repository"
    (root / "fashion_cnn").mkdir(parents=True)
    publish(bundled_repository / "fashion_cnn" / "1", root / "fashion_cnn", 1)
    publish(bundled_repository / "lenet5" / "1", root / "fashion_cnn", 2)
    (root / "models.json").write_text(json.dumps({"model_config_list": [{
        "name": "fashion_cnn", "base_path": "fashion_cnn", "model_version_policy": {"all": {}},
        "version_labels": {"stable": 1}, "traffic": {"stable": 3, "2": 1}, "shadow": {"version": 2, "fraction": 1},
    }]}))  # fmt: skip
    env = {"CNN_POLL_INTERVAL_S": "0", "CNN_MODEL_CONFIG": str(root / "models.json")}
    with running_server(root, tmp_path / "server.log", env) as rolled:
        for start in range(0, 200, 20):
            chunk = {"tensor": fashion.test.images[start : start + 20].tolist(), "dtype": "uint8"}
            assert httpx.post(f"{rolled.base_url}/api/v1/models/fashion_cnn/predict", json=chunk).status_code == 200
        url = f"{rolled.base_url}/api/v1/models/fashion_cnn"
        for _ in range(100):  # the shadow runs in the background
            rollout = httpx.get(url).json()["rollout"]
            if sum(c["requests"] for c in rollout["comparisons"]) == 10 - 2:  # a quarter answered by version 2
                break
            time.sleep(0.1)
        (comparison,) = rollout["comparisons"]
        view = Page(browser)
        try:
            view.page.goto(rolled.base_url + "/")
            view.page.wait_for_selector("#rollout-card:not([hidden])")
            traffic = view.page.locator("#traffic").inner_text()
            assert "“stable” (v1): 75% of requests" in traffic and "v2: 25% of requests" in traffic
            assert "Shadow: v2 also runs 100%" in view.page.locator("#shadow-note").inner_text()
            row = view.page.locator("#comparisons tbody tr").first.inner_text().split("\t")
            assert row[:4] == ["v1", "v2", str(comparison["requests"]), str(comparison["predictions"])]
            assert abs(float(row[4].rstrip("%")) - 100 * comparison["agreement"]) <= 0.05  # one decimal
            cells = view.page.locator("#confusion tbody tr").nth(3).locator("td")
            assert [int(cells.nth(i).inner_text()) for i in range(10)] == comparison["confusion"][3]
            assert view.page.locator("#confusion thead th").nth(4).inner_text() == "Dress"
            view.page.locator("#rollout-card").screenshot(path=str(screenshots / "rollout.png"))
            assert view.errors == [] and view.outside == []
        finally:
            view.close()
