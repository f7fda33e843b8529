"""Explanations through the real app: Grad-CAM, saliency and occlusion heatmaps on the bundled models, the
native ``explain`` route and KServe v1's ``:explain``, their errors, and the explainer's input gradient."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from .conftest import BUNDLED_REPOSITORY, png_bytes

MODELS = ["fashion_cnn", "fashion_resnet", "lenet5"]
METHODS = ["gradcam", "saliency", "occlusion"]
# the last spatial layer larger than 1×1 that is not pooling: a plain CNN's last convolution, a ResNet's last block
DEFAULT_LAYER = {"fashion_cnn": "conv5", "fashion_resnet": "stage3_block2_relu2", "lenet5": "C3"}


@pytest.fixture(scope="module")
def images(fashion):
    """The first 50 test images (uint8 28×28)."""
    return fashion.test.images[:50]


def _upload(image: np.ndarray) -> dict:
    return {"file": ("x.png", png_bytes(image), "image/png")}


def explain(client, model: str, image: np.ndarray, query: str = "", **kwargs):
    return client.post(f"/api/v1/models/{model}/explain{'?' + query if query else ''}", files=_upload(image), **kwargs)


def explained(client, model: str, image: np.ndarray, query: str = "") -> dict:
    response = explain(client, model, image, query)
    assert response.status_code == 200, response.text
    return response.json()


def predicted(client, model: str, image: np.ndarray) -> dict:
    response = client.post(f"/api/v1/models/{model}/predict", files={"files": ("x.png", png_bytes(image), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def heat(body: dict) -> np.ndarray:
    return np.array(body["heatmap"], dtype=np.float64)


def _error(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()["error"]


# -- the native route -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_explain_heatmap_of_the_top1(client, images, model, method):
    for index in (0, 7):  # an ankle boot and a shirt
        image = images[index]
        body = explained(client, model, image, f"method={method}")
        reference = predicted(client, model, image)
        heatmap = heat(body)
        assert body["model_name"] == model and body["model_version"] == 1 and body["method"] == method
        assert list(heatmap.shape) == [28, 28] == body["shape"]
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
        # Normalised per image: the peak is exactly 1 (these images all give a non-zero map).
        assert heatmap.max() == 1.0, (model, method, index)
        assert body["target"] == body["prediction"]
        assert body["prediction"]["class_id"] == reference["class_id"]
        assert body["prediction"]["label"] == reference["label"]
        assert body["prediction"]["probability"] == pytest.approx(reference["probability"], abs=1e-5)
        assert body["layer"] == (DEFAULT_LAYER[model] if method == "gradcam" else None)


def test_gradcam_layer_choice(client, images):
    image = images[0]
    default = heat(explained(client, "fashion_cnn", image))
    conv5 = explained(client, "fashion_cnn", image, "layer=conv5")
    conv1 = explained(client, "fashion_cnn", image, "layer=conv1")
    assert conv5["layer"] == "conv5" and conv1["layer"] == "conv1"
    np.testing.assert_array_equal(heat(conv5), default)  # conv5 is the default
    assert not np.allclose(heat(conv1), heat(conv5), atol=0.05)
    assert heat(conv1).max() == 1.0
    lenet_c1 = explained(client, "lenet5", image, "layer=C1")
    assert lenet_c1["layer"] == "C1"
    assert not np.allclose(heat(lenet_c1), heat(explained(client, "lenet5", image)), atol=0.05)


@pytest.fixture(scope="module")
def uncertain(client, images):
    """The fashion_cnn test image (of the first 50) whose runner-up class is most probable: its index,
    the runner-up class and every class's probability."""
    files = [("files", (f"{i}.png", png_bytes(image), "image/png")) for i, image in enumerate(images)]
    response = client.post("/api/v1/models/fashion_cnn/predict", files=files)
    assert response.status_code == 200, response.text
    probabilities = np.array([p["probabilities"] for p in response.json()["predictions"]])
    runner_up = np.sort(probabilities, axis=1)[:, -2]
    index = int(runner_up.argmax())
    assert runner_up[index] > 0.05
    return index, int(np.argsort(probabilities[index])[-2]), probabilities[index]


@pytest.mark.parametrize("method", METHODS)
def test_explicit_target(client, images, uncertain, method):
    index, other, probabilities = uncertain
    image = images[index]
    top1 = explained(client, "fashion_cnn", image, f"method={method}")
    body = explained(client, "fashion_cnn", image, f"method={method}&target={other}")
    assert body["target"]["class_id"] == other != top1["target"]["class_id"]
    assert body["target"]["probability"] == pytest.approx(probabilities[other], abs=1e-5)
    assert body["prediction"] == top1["prediction"]
    assert body["prediction"]["class_id"] == int(probabilities.argmax())
    assert not np.allclose(heat(body), heat(top1), atol=0.05)


def test_png_overlay(client, images):
    image = images[0]
    for response in (
        explain(client, "fashion_cnn", image, "format=png"),
        explain(client, "lenet5", image, "method=saliency", headers={"accept": "image/png"}),
    ):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(response.content))
        assert picture.format == "PNG" and picture.mode == "RGB"
        width, height = picture.size
        assert width % 28 == 0 and height % 28 == 0 and width >= 280
    # format=json wins over the Accept header
    response = explain(client, "fashion_cnn", image, "format=json", headers={"accept": "image/png"})
    assert response.headers["content-type"] == "application/json" and len(response.json()["heatmap"]) == 28


def test_png_overlay_is_grey_where_the_heatmap_is_zero(client, images):
    """The overlay shows the model input in grey, coloured by the heatmap only where it is above 0."""
    image = images[0]
    tensor = {"tensor": image.tolist(), "dtype": "uint8"}
    url = "/api/v1/models/fashion_cnn/explain?method=saliency"
    heatmap = heat(client.post(url, json=tensor).json())
    response = client.post(url + "&format=png", json=tensor)
    assert response.status_code == 200, response.text
    picture = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    scale = picture.shape[0] // 28
    pixels = picture[::scale, ::scale].astype(int)  # one pixel per input pixel (nearest-neighbour upscale)
    cold = heatmap == 0
    assert 0 < cold.sum() < 28 * 28
    for channel in range(3):
        np.testing.assert_array_equal(pixels[cold][:, channel], image[cold])
    assert (pixels[heatmap == 1.0] != image[heatmap == 1.0][:, None]).any()


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_gradient_methods_are_deterministic(client, images, method):
    first = explained(client, "fashion_cnn", images[3], f"method={method}")
    second = explained(client, "fashion_cnn", images[3], f"method={method}")
    np.testing.assert_array_equal(heat(first), heat(second))
    assert first["target"] == second["target"]


@pytest.mark.parametrize("model", MODELS)
def test_saliency_is_zero_on_zero_pixels(client, images, model):
    """Saliency is input gradient × input: a pixel that is 0 in the model input has importance 0."""
    for index in (0, 1, 2):
        image = images[index]
        response = client.post(
            f"/api/v1/models/{model}/explain?method=saliency", json={"tensor": image.tolist(), "dtype": "uint8"}
        )
        assert response.status_code == 200, response.text
        heatmap = heat(response.json())
        assert (image == 0).any()
        assert (heatmap[image == 0] == 0).all()
        assert heatmap.max() == 1.0 and image[heatmap == 1.0].min() > 0


@pytest.mark.parametrize("model", MODELS)
def test_occlusion_with_one_patch_over_everything(client, images, model):
    image = images[0]
    body = explained(client, model, image, "method=occlusion&patch_size=28&stride=28")
    heatmap = heat(body)
    assert (heatmap == heatmap[0, 0]).all()
    # The one patch turns the image into background: its drop is the heatmap everywhere (normalised to 1).
    black = predicted_probabilities(client, model, np.zeros((28, 28), np.uint8))
    target = body["target"]["class_id"]
    dropped = black[target] < body["target"]["probability"]
    assert dropped  # for these models and this image
    assert heatmap[0, 0] == (1.0 if dropped else 0.0)


def predicted_probabilities(client, model: str, image: np.ndarray) -> np.ndarray:
    return predicted_batch(client, model, image[None])[0]


# the layer feeding the softmax layer `predictions`
PENULTIMATE = {"fashion_cnn": "fc2", "fashion_resnet": "global_pool", "lenet5": "F6"}


def predicted_batch(client, model: str, batch: np.ndarray) -> np.ndarray:
    response = client.post(f"/api/v1/models/{model}/predict", json={"tensor": batch.tolist(), "dtype": "uint8"})
    assert response.status_code == 200, response.text
    return np.array([p["probabilities"] for p in response.json()["predictions"]])


def class_scores(client, model: str, batch: np.ndarray) -> np.ndarray:
    """The logits, computed here: the penultimate layer's activations (native feature maps) times the
    softmax layer's kernel plus its bias, read from the SavedModel's variables."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(BUNDLED_REPOSITORY / model / "1"))
    # "<model>/predictions/kernel:0" in a Sequential model, "predictions/kernel:0" in a functional one
    weights = {
        v.name.split("/")[-2] + "/" + v.name.split("/")[-1]: v.numpy()
        for v in loaded.signatures["serving_default"].variables
    }
    rows = []
    for image in batch:
        response = client.post(
            f"/api/v1/models/{model}/feature-maps?layer={PENULTIMATE[model]}",
            json={"tensor": image.tolist(), "dtype": "uint8"},
        )
        assert response.status_code == 200, response.text
        rows.append(np.array(response.json()["layers"][0]["data"], dtype=np.float64))
    return np.stack(rows) @ weights["predictions/kernel:0"] + weights["predictions/bias:0"]


@pytest.mark.parametrize("model", MODELS)
def test_occlusion_is_the_mean_class_score_drop_of_the_patches_covering_a_pixel(client, images, uncertain, model):
    """Recompute occlusion from the class scores: 14×14 patches every 7 pixels (9 patches; a pixel is covered
    by 1, 2 or 4 of them), each set to 0; a pixel's value is the mean drop of the target's logit over the
    patches that cover it, positive part, divided by the largest."""
    image = images[uncertain[0]]
    body = client.post(
        f"/api/v1/models/{model}/explain?method=occlusion&patch_size=14&stride=7",
        json={"tensor": image.tolist(), "dtype": "uint8"},
    ).json()
    target = body["target"]["class_id"]
    corners = [(top, left) for top in (0, 7, 14) for left in (0, 7, 14)]
    occluded = np.repeat(image[None], len(corners), axis=0)
    for i, (top, left) in enumerate(corners):
        occluded[i, top : top + 14, left : left + 14] = 0
    scores = class_scores(client, model, np.concatenate([image[None], occluded]))[:, target]
    drops = scores[0] - scores[1:]
    total, cover = np.zeros((28, 28)), np.zeros((28, 28))
    for drop, (top, left) in zip(drops, corners, strict=True):
        total[top : top + 14, left : left + 14] += drop
        cover[top : top + 14, left : left + 14] += 1
    expected = np.maximum(total / cover, 0)
    assert expected.max() > 0.01
    np.testing.assert_allclose(heat(body), expected / expected.max(), atol=1e-4)


def test_occlusion_of_a_confident_image_is_not_blank(client, images):
    """The top-1 probability of test image 0 (an ankle boot) is 1.0 in float32 under any patch; its
    logit still falls, so the heatmap is not all zero."""
    top = predicted(client, "fashion_cnn", images[0])
    assert top["probability"] >= 0.9999
    assert heat(explained(client, "fashion_cnn", images[0], "method=occlusion")).max() == 1.0


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "query", "status", "words"),
    [
        ("fashion_cnn", "layer=fc1", 400, ["fc1", "conv1, pool1, conv2, conv3, pool2, conv4, conv5, pool3"]),
        ("lenet5", "layer=pad", 400, ["pad", "C1, S2, C3, S4, C5"]),
        ("fashion_cnn", "layer=nope", 404, ["nope"]),
        ("fashion_cnn", "target=10", 400, ["10"]),
        ("fashion_cnn", "target=-1", 422, ["target"]),
        ("fashion_cnn", "method=nope", 422, ["method"]),
        ("fashion_cnn", "method=saliency&layer=conv1", 400, ["layer", "saliency"]),
        ("fashion_cnn", "method=occlusion&layer=conv1", 400, ["layer", "occlusion"]),
        ("fashion_cnn", "method=occlusion&patch_size=4&stride=5", 400, ["stride", "patch_size"]),
        ("fashion_cnn", "method=occlusion&patch_size=29&stride=1", 400, ["patch_size", "28"]),
        ("fashion_cnn", "method=occlusion&patch_size=0", 422, ["patch_size"]),
        ("fashion_cnn", "method=occlusion&stride=0", 422, ["stride"]),
        ("fashion_cnn", "format=gif", 422, ["format"]),
    ],
)
def test_explain_errors(client, images, model, query, status, words):
    message = _error(explain(client, model, images[0], query), status)
    for word in words:
        assert word in message, message


def test_explain_body_errors(client, images):
    two = [
        ("file", ("a.png", png_bytes(images[0]), "image/png")),
        ("file", ("b.png", png_bytes(images[1]), "image/png")),
    ]
    message = _error(client.post("/api/v1/models/fashion_cnn/explain", files=two), 400)
    assert "exactly one image" in message and "2" in message
    not_image = {"file": ("x.png", b"this is not an image", "image/png")}
    assert "not a decodable image" in _error(client.post("/api/v1/models/fashion_cnn/explain", files=not_image), 400)
    assert "'nope' not found" in _error(explain(client, "nope", images[0]), 404)
    assert "7" in _error(client.post("/api/v1/models/fashion_cnn/versions/7/explain", files=_upload(images[0])), 404)
    both = {"image": base64.b64encode(png_bytes(images[0])).decode(), "tensor": images[0].tolist()}
    assert "exactly one" in _error(client.post("/api/v1/models/fashion_cnn/explain", json=both), 400)


# -- KServe v1 :explain -------------------------------------------------------------------------------
def _b64(image: np.ndarray) -> dict:
    return {"b64": base64.b64encode(png_bytes(image)).decode()}


@pytest.mark.parametrize("query", ["method=gradcam&layer=conv3", "method=saliency", "method=occlusion&stride=4"])
def test_v1_explain_matches_native(client, images, query):
    batch = images[[0, 7, 12]]
    response = client.post(f"/v1/models/fashion_cnn:explain?{query}", json={"instances": [_b64(i) for i in batch]})
    assert response.status_code == 200, response.text
    rows = response.json()["explanations"]
    assert len(rows) == 3
    for row, image in zip(rows, batch, strict=True):
        native = explained(client, "fashion_cnn", image, query)
        assert set(row) == {"method", "layer", "target", "label", "probability", "heatmap"}
        assert row["method"] == native["method"] and row["layer"] == native["layer"]
        assert row["target"] == native["target"]["class_id"] and row["label"] == native["target"]["label"]
        assert row["probability"] == pytest.approx(native["target"]["probability"], abs=1e-5)
        assert np.allclose(heat(row), heat(native), atol=1e-5)


def test_v1_explain_versions_and_limits(client, images):
    body = {"instances": [_b64(images[0])]}
    unversioned = client.post("/v1/models/fashion_cnn:explain?target=3", json=body)
    versioned = client.post("/v1/models/fashion_cnn/versions/1:explain?target=3", json=body)
    assert unversioned.status_code == versioned.status_code == 200, versioned.text
    assert versioned.json() == unversioned.json()
    row = versioned.json()["explanations"][0]
    native = explained(client, "fashion_cnn", images[0], "target=3")
    assert row["target"] == 3 and row["label"] == native["target"]["label"]
    assert row["probability"] == pytest.approx(native["target"]["probability"], abs=1e-5)
    assert np.allclose(heat(row), heat(native), atol=1e-5)
    assert row["layer"] == "conv5"
    # The bundled repository defines no version labels: an unknown one is a 404.
    assert "nope" in _error(client.post("/v1/models/fashion_cnn/labels/nope:explain", json=body), 404)
    assert "7" in _error(client.post("/v1/models/fashion_cnn/versions/7:explain", json=body), 404)
    message = _error(
        client.post("/v1/models/fashion_cnn:explain", json={**body, "signature_name": "feature_maps"}), 400
    )
    assert "feature_maps" in message and "serving_default" in message
    nine = {"instances": [_b64(images[i]) for i in range(9)]}
    message = _error(client.post("/v1/models/fashion_cnn:explain", json=nine), 413)
    assert "9" in message and "8" in message and "for explain" in message
    assert "target" in _error(client.post("/v1/models/fashion_cnn:explain?target=10", json=body), 400)
    assert "nope" in _error(client.post("/v1/models/nope:explain", json=body), 404)


def test_v1_explain_float_tensor(client, images):
    batch = images[[0, 7]]
    floats = (batch.astype(np.float32) / 255.0).tolist()  # n×28×28 in [0, 1], no channel axis
    for query in ("method=saliency", "method=gradcam"):
        response = client.post(f"/v1/models/lenet5:explain?{query}", json={"instances": floats})
        assert response.status_code == 200, response.text
        rows = response.json()["explanations"]
        assert len(rows) == 2
        for row, image in zip(rows, batch, strict=True):
            native = client.post(
                f"/api/v1/models/lenet5/explain?{query}", json={"tensor": image.tolist(), "dtype": "uint8"}
            ).json()
            assert row["target"] == native["target"]["class_id"]
            assert row["probability"] == pytest.approx(native["target"]["probability"], abs=1e-5)
            assert np.allclose(heat(row), heat(native), atol=1e-5)
            assert np.array(row["heatmap"]).shape == (28, 28)


# -- the explainer's gradients --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet5(fashion):
    """lenet5 loaded outside the app, with its explainer built, and 4 test images as model input."""
    from bench.faithfulness import load_version
    from models.data import to_model_input
    from service.core.request import ExplainMethod, ExplainSpec

    model = load_version(BUNDLED_REPOSITORY, "lenet5", 1)
    x = to_model_input(fashion.test.images[:4])
    model.explain(x, ExplainSpec(ExplainMethod.saliency))
    return model, model._explainer, x


def test_input_gradient_matches_finite_differences(lenet5):
    """The input gradient is that of the class logit: the difference of two classes' gradients is the
    gradient of ``logit_a - logit_b = log p_a - log p_b``, checked against a central finite difference
    along a random direction. lenet5 is smooth (tanh), so the central difference is accurate to O(eps²);
    eps = 1e-2 keeps the float32 rounding of ``log p`` (~1e-7 / 2eps) far below the 5% tolerance."""
    model, explainer, x = lenet5
    probabilities = model.predict(x)
    order = np.argsort(probabilities, axis=1)
    a, b = order[:, -1], order[:, -2]  # the two most probable classes: log p is precise in float32
    gradient = explainer._grads(x, a)["input_gradient"].numpy() - explainer._grads(x, b)["input_gradient"].numpy()
    rows = np.arange(len(x))

    def score(images: np.ndarray) -> np.ndarray:
        p = model.predict(images.astype(np.float32)).astype(np.float64)
        return np.log(p[rows, a]) - np.log(p[rows, b])

    rng = np.random.default_rng(0)
    eps = 1e-2
    for _ in range(3):
        direction = rng.standard_normal(x.shape)
        direction /= np.sqrt((direction**2).sum(axis=(1, 2, 3), keepdims=True))  # unit length per image
        numeric = (score(x + eps * direction) - score(x - eps * direction)) / (2 * eps)
        analytic = (gradient.astype(np.float64) * direction).sum(axis=(1, 2, 3))
        assert np.abs(numeric).min() > 1e-3  # a direction along which the score does change
        np.testing.assert_allclose(analytic, numeric, rtol=0.05)


def test_gradients_are_linear_in_the_target_and_activations_match_feature_maps(lenet5):
    """The sum over all targets of the input gradients is the gradient of the sum of the logits, and the
    frozen graph's activations are those of the ``feature_maps`` signature."""
    import tensorflow as tf

    model, explainer, x = lenet5
    each = sum(explainer._grads(x, np.full(len(x), c))["input_gradient"].numpy() for c in range(10))
    ones = explainer._gradients(tf.constant(x), tf.ones((len(x), 10)))
    np.testing.assert_allclose(ones["input_gradient"].numpy(), each, atol=1e-5, rtol=1e-4)
    reference = model.feature_maps(x, explainer.gradcam_layers)
    assert explainer.gradcam_layers == ["C1", "S2", "C3", "S4", "C5"]
    for layer, activation in zip(explainer.gradcam_layers, ones["activations"], strict=True):
        np.testing.assert_allclose(activation.numpy(), reference[layer], atol=1e-5)
