"""Every model in the bundled repository, whatever its architecture, through every REST API: the same
probabilities as its own SavedModel, the feature maps of every layer, a layer summary that describes
the network as built (branches included) and a Grad-CAM explanation on its default layer."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contract import ModelCard
from models.data import to_model_input

from .conftest import BUNDLED_MODELS, png_bytes

IMAGES = 4


@pytest.fixture(scope="module")
def images(fashion) -> np.ndarray:
    return fashion.test.images[:IMAGES]


@pytest.fixture(scope="module", params=BUNDLED_MODELS)
def model(request, bundled_repository):
    """A bundled model's name, card and SavedModel (loaded by plain TensorFlow, as the reference)."""
    import tensorflow as tf

    version_dir = bundled_repository / request.param / "1"
    return request.param, ModelCard.read(version_dir), tf.saved_model.load(str(version_dir))


def test_every_api_answers_what_the_saved_model_computes(client, model, images):
    import tensorflow as tf

    name, card, saved_model = model
    floats = to_model_input(images)
    reference = saved_model.signatures["serving_default"](images=tf.constant(floats))["probabilities"].numpy()
    pngs = [png_bytes(image) for image in images]
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(pngs)]
    answers = {
        "native-multipart": [p["probabilities"] for p in client.post(f"/api/v1/models/{name}/predict", files=files).json()["predictions"]],
        "native-tensor": [
            p["probabilities"]
            for p in client.post(f"/api/v1/models/{name}/predict", json={"tensor": images.tolist(), "dtype": "uint8"}).json()["predictions"]
        ],
        "tfs-rows": client.post(f"/v1/models/{name}:predict", json={"instances": floats.tolist()}).json()["predictions"],
        "v2-uint8": np.reshape(
            client.post(
                f"/v2/models/{name}/infer",
                json={"inputs": [{"name": "images", "shape": [IMAGES, 28, 28, 1], "datatype": "UINT8", "data": images.ravel().tolist()}]},
            ).json()["outputs"][0]["data"],
            (IMAGES, len(card.class_names)),
        ),
    }  # fmt: skip
    for api, probabilities in answers.items():
        np.testing.assert_allclose(probabilities, reference, atol=1e-5, err_msg=f"{name} {api}")


def test_feature_maps_of_every_layer(client, model, images):
    import tensorflow as tf

    name, card, saved_model = model
    floats = to_model_input(images[:1])
    reference = saved_model.signatures["feature_maps"](images=tf.constant(floats))
    png = png_bytes(images[0])
    body = client.post(f"/api/v1/models/{name}/feature-maps", files={"file": ("x.png", png, "image/png")}).json()
    shapes = {layer.name: layer.output_shape for layer in card.summary.layers}
    assert [layer["name"] for layer in body["layers"]] == card.feature_layers
    for layer in body["layers"]:
        assert layer["shape"] == shapes[layer["name"]]
        np.testing.assert_allclose(np.array(layer["data"]), reference[layer["name"]].numpy()[0], atol=1e-4)
    for layer in card.feature_layers:  # every layer draws as a PNG grid (or a strip, for vectors)
        picture = client.post(
            f"/api/v1/models/{name}/feature-maps?layer={layer}&format=png", files={"file": ("x.png", png)}
        )
        assert picture.status_code == 200, (layer, picture.text)
        assert Image.open(io.BytesIO(picture.content)).format == "PNG"


def test_summary_describes_the_network_as_built(client, model):
    name, card, _ = model
    summary = client.get(f"/api/v1/models/{name}/summary").json()
    assert summary == card.summary.model_dump(mode="json")
    layers = summary["layers"]
    assert summary["total_params"] == sum(layer["params"] for layer in layers)
    assert summary["total_mult_adds"] == sum(layer["mult_adds"] for layer in layers)
    assert summary["total_activation_bytes"] == sum(layer["memory_bytes"] for layer in layers)
    seen = {"images": {"receptive_field": [1, 1], "output_shape": summary["input_shape"]}}
    for layer in layers:
        assert layer["inputs"], layer["name"]
        assert all(source in seen for source in layer["inputs"]), f"{layer['name']} reads a later layer"
        # a layer sees at least what each of its inputs sees
        widest = max(seen[source]["receptive_field"][0] for source in layer["inputs"])
        assert layer["receptive_field"][0] >= min(widest, summary["input_shape"][0]), layer["name"]
        if layer["type"] in ("Add", "Multiply", "Average", "Maximum"):
            assert len(layer["inputs"]) >= 2
            assert all(seen[source]["output_shape"] == layer["output_shape"] for source in layer["inputs"])
        seen[layer["name"]] = layer


def test_gradcam_on_the_default_layer(client, model, images):
    name, card, _ = model
    detail = client.get(f"/api/v1/models/{name}").json()
    assert detail["gradcam_default"] in detail["gradcam_layers"]
    assert set(detail["gradcam_layers"]) <= set(card.feature_layers)
    response = client.post(
        f"/api/v1/models/{name}/explain", files={"file": ("x.png", png_bytes(images[0]), "image/png")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    heatmap = np.array(body["heatmap"])
    assert body["layer"] == detail["gradcam_default"] and heatmap.shape == (28, 28)
    assert heatmap.max() == 1.0 and heatmap.min() >= 0.0
