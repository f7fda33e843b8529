"""Pure codecs, one module per API dialect and transport: ``decode(wire) -> InferenceRequest`` and
``encode(InferenceResult) ->`` the dialect's answer (an HTTP response, or a gRPC message).

They never await, never look a model up and never call the inference path: a codec only says where a
request's images or tensor values are (tensors go through :mod:`service.core.tensors`); the pipeline
checks the request against the model's signature and runs it. ``native_schemas`` holds the native
API's body schemas, ``visualize`` the PNG pictures its answers can be.
"""
