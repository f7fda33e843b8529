"""Pure codecs, one module per API dialect: ``decode(wire) -> InferenceRequest`` and
``encode(InferenceResult) -> Response``.

They never await, never look a model up and never call the inference path: the request they build is
checked against the model's signature by :mod:`service.pipeline`, which also runs it.
"""
