"""TensorFlow Serving over gRPC: ``tensorflow.serving.PredictionService`` (``Predict``,
``GetModelMetadata``) and ``tensorflow.serving.ModelService`` (``GetModelStatus``).

``Predict`` goes through the same pipeline entry as REST, with the pure codec of
:mod:`service.codecs.tfserving_grpc`; metadata and status are the protocol layer's views
(:mod:`service.protocol.tfserving`), as protos. ``Classify``, ``Regress``, ``MultiInference`` and
``HandleReloadConfigRequest`` answer UNIMPLEMENTED, after the API key check, like every RPC.
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

from service.codecs import tfserving_grpc
from service.core.errors import InvalidInput
from service.protocol import tfserving as views
from service.transports.grpc_call import RpcContext, answer_unimplemented, message_reader, routing_key

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
            return await self.rpc.plane.pipeline.handle(
                tfserving_grpc.target(request, routing_key(context)),
                message_reader(request, tfserving_grpc.bytes_to_parse),
                tfserving_grpc.decode_predict,
                tfserving_grpc.encode_predict,
            )

        return await self.rpc.call(context, f"/{PREDICTION_SERVICE}/Predict", request.model_spec.name, work)

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        async def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            fields = list(request.metadata_field)
            if fields != [_SIGNATURE_DEF]:
                raise InvalidInput(f"metadata_field must be ['{_SIGNATURE_DEF}'], got {fields}")
            spec = request.model_spec
            record = self.rpc.plane.table.ready(spec.name, tfserving_grpc.version_ref(spec))
            signatures = json_format.ParseDict(
                {_SIGNATURE_DEF: views.signature_defs(record.card)}, get_model_metadata_pb2.SignatureDefMap()
            )
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = record.name
            response.model_spec.version.value = record.version
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
            spec = request.model_spec
            status = views.model_status(self.rpc.plane.table, spec.name, tfserving_grpc.version_ref(spec))
            return json_format.ParseDict(status, get_model_status_pb2.GetModelStatusResponse())

        return await self.rpc.call(context, f"/{MODEL_SERVICE}/GetModelStatus", request.model_spec.name, work)


def add_to(server: grpc.aio.Server, rpc: RpcContext) -> list[str]:
    """Register both services on ``server``; return their full names."""
    prediction = PredictionServicer(rpc)
    answer_unimplemented(prediction, prediction_service_pb2_grpc.PredictionServiceServicer,
                         prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"], rpc)  # fmt: skip
    models = ModelServicer(rpc)
    answer_unimplemented(models, model_service_pb2_grpc.ModelServiceServicer,
                         model_service_pb2.DESCRIPTOR.services_by_name["ModelService"], rpc)  # fmt: skip
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    return [PREDICTION_SERVICE, MODEL_SERVICE]
