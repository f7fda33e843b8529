"""The Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService``.

Health, metadata, ``ModelInfer`` (through the same pipeline entry as REST, with the pure codec of
:mod:`service.codecs.v2_grpc`) and the model repository RPCs. The other RPCs of the upstream service
(streaming, model config and statistics, shared memory, trace and log settings) answer UNIMPLEMENTED,
after the API key check, like every RPC.
"""

from __future__ import annotations

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from service.codecs import v2_grpc
from service.core.request import version_or_label
from service.protocol import v2 as views
from service.protocol.access import check_model_control
from service.transports.grpc_call import RpcContext, answer_unimplemented, message_reader, routing_key

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def _route(method: str) -> str:
    return f"/{SERVICE}/{method}"


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, rpc: RpcContext) -> None:
        self.rpc = rpc
        self.plane = rpc.plane

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        async def work() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self.rpc.call(context, _route("ServerLive"), "", work)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        async def work() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.plane.table.readiness()[0])

        return await self.rpc.call(context, _route("ServerReady"), "", work)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            ready = views.model_ready(self.plane.table, request.name, version_or_label(request.version))
            return pb.ModelReadyResponse(ready=ready.ready)

        return await self.rpc.call(context, _route("ModelReady"), request.name, work)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async def work() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**views.server_metadata().model_dump())

        return await self.rpc.call(context, _route("ServerMetadata"), "", work)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            info = views.model_metadata(self.plane.table, request.name, version_or_label(request.version))
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=info.name,
                versions=info.versions,
                platform=info.platform,
                inputs=[tensor(**t.model_dump()) for t in info.inputs],
                outputs=[tensor(**t.model_dump()) for t in info.outputs],
            )

        return await self.rpc.call(context, _route("ModelMetadata"), request.name, work)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def work() -> pb.ModelInferResponse:
            return await self.plane.pipeline.handle(
                v2_grpc.target(request, routing_key(context)),
                message_reader(request, v2_grpc.bytes_to_parse),
                v2_grpc.decode_infer,
                v2_grpc.encode_infer,
            )

        return await self.rpc.call(context, _route("ModelInfer"), request.model_name, work)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        async def work() -> pb.RepositoryIndexResponse:
            entries = views.repository_index(self.plane.table, only_ready=request.ready)
            index = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(models=[index(**entry.model_dump()) for entry in entries])

        return await self.rpc.call(context, _route("RepositoryIndex"), "", work)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        async def work() -> pb.RepositoryModelLoadResponse:
            check_model_control(self.plane.settings)
            await self.plane.control.load(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self.rpc.call(context, _route("RepositoryModelLoad"), request.model_name, work)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        async def work() -> pb.RepositoryModelUnloadResponse:
            check_model_control(self.plane.settings)
            await self.plane.control.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self.rpc.call(context, _route("RepositoryModelUnload"), request.model_name, work)


def add_to(server: grpc.aio.Server, rpc: RpcContext) -> list[str]:
    """Register the service on ``server``; return its full name."""
    servicer = InferenceServicer(rpc)
    answer_unimplemented(
        servicer,
        service_pb2_grpc.GRPCInferenceServiceServicer,
        pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
        rpc,
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return [SERVICE]
