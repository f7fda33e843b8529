"""Do the explanations point at what fashion_cnn uses? The deletion test (bench.faithfulness) on 500 real
Fashion-MNIST test images: masking the 10% of pixels a method ranks highest must lower the predicted
class's probability much more than masking as many random pixels."""

from __future__ import annotations

import pytest

from bench.faithfulness import DeletionResult, deletion_test, load_version
from service.core.request import ExplainMethod, ExplainSpec

IMAGES = 500
SPECS = {
    "gradcam": ExplainSpec(ExplainMethod.gradcam),
    "saliency": ExplainSpec(ExplainMethod.saliency),
    # Occlusion runs one occluded copy of each image per patch position: the default (4×4 patches every
    # 2 pixels, 169 positions) takes about 3 minutes on 2 cores, 7×7 patches every 7 pixels (16
    # positions) about 17 s. The README has the default's figures (python -m bench.faithfulness).
    "occlusion": ExplainSpec(ExplainMethod.occlusion, patch_size=7, stride=7),
}


@pytest.fixture(scope="module")
def model_and_images(bundled_repository, fashion):
    from models.data import to_model_input

    model = load_version(bundled_repository, "fashion_cnn", 1)
    return model, to_model_input(fashion.test.images[:IMAGES])


@pytest.fixture(scope="module")
def results(model_and_images) -> dict[str, DeletionResult]:
    """Every method's deletion test in one call: the images' probabilities and the random baseline are
    computed once."""
    model, images = model_and_images
    return {result.method: result for result in deletion_test(model, images, list(SPECS.values()))}


@pytest.mark.parametrize("method", list(SPECS))
def test_deletion_beats_random_masking(results, method):
    result = results[method]
    assert result.images == IMAGES
    assert 0 < result.random_drop < result.mean_drop, result
    assert result.ratio >= 1.5, result
    assert result.t_statistic > 3, result
