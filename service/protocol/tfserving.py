"""TensorFlow Serving's status views, REST and gRPC alike: version status and signature metadata, as
TF Serving's JSON (the gRPC servicers parse it into their protos)."""

from __future__ import annotations

from typing import Any

from contract import FEATURE_MAPS_SIGNATURE, SERVING_SIGNATURE, ModelCard
from service.hosting.table import ModelTable, VersionRef
from service.hosting.versions import VersionRecord, VersionState

METHOD_NAME = "tensorflow/serving/predict"


def version_status(record: VersionRecord) -> dict[str, Any]:
    """TF Serving's ``ModelVersionStatus``: a failed load is END with its error."""
    failed = record.state is VersionState.END and record.error is not None
    return {
        "version": str(record.version),
        "state": record.state.value,
        "status": {"error_code": "UNKNOWN" if failed else "OK", "error_message": record.error if failed else ""},
    }


def model_status(table: ModelTable, name: str, ref: VersionRef) -> dict[str, Any]:
    """``GetModelStatusResponse``: the named version, or every version newest first."""
    records = [table.find(name, ref)] if ref is not None else table.versions(name)
    return {"model_version_status": [version_status(r) for r in records]}


def _tensor_info(name: str, shape: list[int]) -> dict[str, Any]:
    return {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in shape], "unknown_rank": False},
        "name": f"{name}:0",
    }


def signature_defs(card: ModelCard) -> dict[str, Any]:
    """The ``serving_default`` and ``feature_maps`` signatures, as ``SignatureDef`` JSON."""
    image = {card.input.name: _tensor_info(card.input.name, card.input.shape)}
    layers = {layer.name: layer for layer in card.summary.layers} if card.summary else {}
    feature_outputs = {
        name: _tensor_info(name, [-1, *layers[name].output_shape]) if name in layers else _tensor_info(name, [-1])
        for name in card.feature_layers
    }
    return {
        SERVING_SIGNATURE: {
            "inputs": image,
            "outputs": {card.output.name: _tensor_info(card.output.name, card.output.shape)},
            "method_name": METHOD_NAME,
        },
        FEATURE_MAPS_SIGNATURE: {"inputs": image, "outputs": feature_outputs, "method_name": METHOD_NAME},
    }
