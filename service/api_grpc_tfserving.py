"""TensorFlow Serving over gRPC: ``tensorflow.serving.PredictionService`` (``Predict``,
``GetModelMetadata``) and ``tensorflow.serving.ModelService`` (``GetModelStatus``).

``Predict`` goes through the pipeline with the pure codec of :mod:`service.codecs.tfserving_grpc`;
metadata and status are the REST API's, as protos. ``Classify``, ``Regress``, ``MultiInference`` and
``HandleReloadConfigRequest`` answer UNIMPLEMENTED, as the generated base classes do.
"""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from service.api_tfserving import signature_defs, version_status
from service.codecs import tfserving_grpc
from service.errors import InvalidInput
from service.grpc_server import RpcContext

PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name
_SIGNATURE_DEF = "signature_def"


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, rpc: RpcContext) -> None:
        self.rpc = rpc

    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        async def work() -> predict_pb2.PredictResponse:
            pipeline = self.rpc.pipeline
            pipeline.admit(request.model_spec.name, tfserving_grpc.version_ref(request.model_spec))
            result = await pipeline.run(tfserving_grpc.decode_predict(request))
            return tfserving_grpc.encode_predict(result)

        return await self.rpc.call(context, f"/{PREDICTION_SERVICE}/Predict", request.model_spec.name, work)

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        async def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            fields = list(request.metadata_field)
            if fields != [_SIGNATURE_DEF]:
                raise InvalidInput(f"metadata_field must be ['{_SIGNATURE_DEF}'], got {fields}")
            spec = request.model_spec
            model = self.rpc.runtime.served(spec.name, tfserving_grpc.version_ref(spec)).version
            signatures = json_format.ParseDict(
                {_SIGNATURE_DEF: signature_defs(model)}, get_model_metadata_pb2.SignatureDefMap()
            )
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = model.version
            response.metadata[_SIGNATURE_DEF].Pack(signatures)
            return response

        return await self.rpc.call(context, f"/{PREDICTION_SERVICE}/GetModelMetadata", request.model_spec.name, work)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, rpc: RpcContext) -> None:
        self.rpc = rpc

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        async def work() -> get_model_status_pb2.GetModelStatusResponse:
            spec, runtime = request.model_spec, self.rpc.runtime
            ref = tfserving_grpc.version_ref(spec)
            models = [runtime.find(spec.name, ref)] if ref is not None else runtime.repository.versions(spec.name)
            return json_format.ParseDict(
                {"model_version_status": [version_status(m) for m in models]},
                get_model_status_pb2.GetModelStatusResponse(),
            )

        return await self.rpc.call(context, f"/{MODEL_SERVICE}/GetModelStatus", request.model_spec.name, work)


def add_to(server: grpc.aio.Server, rpc: RpcContext) -> list[str]:
    """Register both services on ``server``; return their full names."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(rpc), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(rpc), server)
    return [PREDICTION_SERVICE, MODEL_SERVICE]
