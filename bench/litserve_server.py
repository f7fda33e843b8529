"""A peer: LitServe serving the same model with batching, behind the same TF-Serving JSON route.

Run: ``python -m bench.litserve_server --model <version dir> --port <port>``: the SavedModel on TensorFlow;
with ``--openvino-ir <model.xml> --precision fp32|bf16|int8``, that OpenVINO model compiled as the service
compiles it (the engine the service chose).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import litserve as ls
import numpy as np

from service.hosting.engines import OPENVINO_CPU_PRECISIONS, openvino_cpu_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class SavedModelAPI(ls.LitAPI):
    """``{"instances": [image]}`` → ``{"predictions": [probabilities]}``, batched across requests."""

    def __init__(self, model_dir: str, openvino_ir: str | None = None, precision: str = "fp32", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_dir, self.openvino_ir, self.precision = model_dir, openvino_ir, precision

    def setup(self, device: str) -> None:
        if self.openvino_ir:
            import openvino

            compiled = openvino.Core().compile_model(self.openvino_ir, "CPU", openvino_cpu_config(self.precision))
            request, output = compiled.create_infer_request(), compiled.output("probabilities")
            self._run = lambda x: request.infer([x])[output]
            return
        import tensorflow as tf

        signature = tf.saved_model.load(self.model_dir).signatures["serving_default"]
        self._run = lambda x: signature(images=tf.constant(x))["probabilities"].numpy()

    def decode_request(self, request) -> np.ndarray:  # unannotated: LitServe then parses the JSON body
        return np.asarray(request["instances"], dtype=np.float32)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._run(x)

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
    parser.add_argument("--openvino-ir", help="serve this OpenVINO model (.xml) instead of the SavedModel")
    parser.add_argument("--precision", default="fp32", choices=OPENVINO_CPU_PRECISIONS)
    args = parser.parse_args()
    api = SavedModelAPI(
        args.model, args.openvino_ir, args.precision, max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout, api_path=args.route,
    )  # fmt: skip
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, access_log=False)


if __name__ == "__main__":
    main()
