"""The peer: LitServe serving the same SavedModel with batching, behind the same TF-Serving JSON route.

Run: ``python -m bench.litserve_server --model <version dir> --port <port>``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import litserve as ls
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class SavedModelAPI(ls.LitAPI):
    """``{"instances": [image]}`` → ``{"predictions": [probabilities]}``, batched across requests."""

    def __init__(self, model_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        import tensorflow as tf

        self._tf = tf
        self._predict = tf.saved_model.load(self.model_dir).signatures["serving_default"]

    def decode_request(self, request) -> np.ndarray:  # unannotated: LitServe then parses the JSON body
        return np.asarray(request["instances"], dtype=np.float32)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predict(images=self._tf.constant(x))["probabilities"].numpy()

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return [row[np.newaxis] for row in output]

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return {"predictions": output.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="SavedModel version directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", default="/v1/models/fashion_cnn:predict")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout", type=float, default=0.002)
    args = parser.parse_args()
    api = SavedModelAPI(
        args.model, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout, api_path=args.route
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, access_log=False)


if __name__ == "__main__":
    main()
