"""The model contract shared by :mod:`models` (which writes it) and :mod:`service` (which reads it).

TensorFlow-free on purpose: importing it costs the service nothing and never pulls in training code.
"""

from contract.card import (
    DEFAULT_REPOSITORY,
    FEATURE_MAPS_SIGNATURE,
    INPUT_NAME,
    INT8_MODEL,
    MODEL_CARD_FILE,
    OUTPUT_NAME,
    PRECISIONS,
    REFERENCE,
    RUNTIMES,
    SERVING_SIGNATURE,
    LayerSummary,
    ModelCard,
    ModelSummary,
    PrecisionAccuracy,
    PrecisionName,
    Preprocessing,
    RuntimeName,
    SignatureSpec,
    TensorSpec,
)

__all__ = [
    "DEFAULT_REPOSITORY",
    "FEATURE_MAPS_SIGNATURE",
    "INPUT_NAME",
    "INT8_MODEL",
    "MODEL_CARD_FILE",
    "OUTPUT_NAME",
    "PRECISIONS",
    "REFERENCE",
    "RUNTIMES",
    "SERVING_SIGNATURE",
    "LayerSummary",
    "ModelCard",
    "ModelSummary",
    "PrecisionAccuracy",
    "PrecisionName",
    "Preprocessing",
    "RuntimeName",
    "SignatureSpec",
    "TensorSpec",
]
