"""The naive baseline: FastAPI, a sync endpoint (Starlette's threadpool), one model call per request.

Same TF-Serving JSON body as the served model: ``POST /v1/models/{name}:predict`` with
``{"instances": [...]}``. Run: ``BENCH_MODEL_DIR=<version dir> uvicorn bench.naive_server:app``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf
from fastapi import FastAPI
from pydantic import BaseModel

model = tf.saved_model.load(os.environ["BENCH_MODEL_DIR"])
predict_fn = model.signatures["serving_default"]

app = FastAPI(title="naive")


class PredictRequest(BaseModel):
    instances: list[Any]


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/models/{name}:predict")
def predict(name: str, request: PredictRequest) -> dict[str, Any]:
    images = tf.constant(np.asarray(request.instances, dtype=np.float32))
    probabilities = predict_fn(images=images)["probabilities"].numpy()
    return {"predictions": probabilities.tolist()}
