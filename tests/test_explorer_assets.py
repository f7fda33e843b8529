"""The explorer's files: served by the app, nothing from another site, and honest sample images."""

from __future__ import annotations

import io
import json
import re

import numpy as np
from PIL import Image

from service.transports.explorer import ASSETS


def test_the_page_and_every_asset_it_names_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    referenced = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert "/explorer/explorer.js" in referenced and "/explorer/explorer.css" in referenced
    for path in referenced:
        assert client.get(path).status_code == 200, path


def test_no_asset_loads_anything_from_another_site():
    for path in ASSETS.rglob("*"):
        if path.suffix in {".html", ".js", ".css"}:
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", path.read_text()), path


def test_samples_are_the_test_set_images_they_claim(client, fashion):
    index = json.loads((ASSETS / "samples" / "samples.json").read_text())
    samples = index["samples"]
    assert sorted(s["class_id"] for s in samples) == list(range(10))
    for sample in samples:
        served = client.get(f"/explorer/samples/{sample['file']}")
        assert served.status_code == 200
        pixels = np.asarray(Image.open(io.BytesIO(served.content)))
        assert np.array_equal(pixels, fashion.test.images[sample["test_index"]])
        assert fashion.test.labels[sample["test_index"]] == sample["class_id"]
