"""The ``trainer.v1.Trainer`` gRPC servicer: proto -> core -> proto, nothing else
(the conversions are trainer.converters').

Domain errors raised by the core become status codes in
rpc.server.ErrorMappingInterceptor.
"""

from __future__ import annotations

from trainer.converters import (
    job_proto,
    job_request,
    job_states,
    load_limits_proto,
    sweep_proto,
    sweep_spec,
    sweep_states,
)
from trainer.service import TrainerService
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

__all__ = ["TrainerServicer", "job_proto"]


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, service: TrainerService) -> None:
        self._service = service

    async def Start(self, request, context):
        return trainer_pb2.StartResponse(
            job=job_proto(await self._service.start_job_durably(job_request(request)))
        )

    async def Status(self, request, context):
        record, lines = self._service.status(request.job_id, request.log_lines)
        return trainer_pb2.StatusResponse(
            job=job_proto(record), log_tail=lines, load_limits=load_limits_proto(self._service.load_limits())
        )

    async def Kill(self, request, context):
        return trainer_pb2.KillResponse(job=job_proto(await self._service.kill(request.job_id)))

    async def List(self, request, context):
        jobs = self._service.list_jobs(
            job_states(request.states), request.model, request.limit, request.sweep_id
        )
        return trainer_pb2.ListResponse(jobs=[job_proto(j) for j in jobs])

    async def StartSweep(self, request, context):
        view = await self._service.start_sweep(sweep_spec(request))
        return trainer_pb2.StartSweepResponse(sweep=sweep_proto(view))

    async def GetSweep(self, request, context):
        return trainer_pb2.GetSweepResponse(sweep=sweep_proto(self._service.sweeps.view(request.sweep_id)))

    async def ListSweeps(self, request, context):
        views = self._service.sweeps.list_sweeps(sweep_states(request.states), request.limit)
        return trainer_pb2.ListSweepsResponse(sweeps=[sweep_proto(v) for v in views])

    async def KillSweep(self, request, context):
        view = await self._service.sweeps.kill(request.sweep_id)
        return trainer_pb2.KillSweepResponse(sweep=sweep_proto(view))

    async def Watch(self, request, context):
        async for event in self._service.watch(request.job_id):
            if event.job is not None:
                yield trainer_pb2.WatchResponse(job=job_proto(event.job))
            elif event.line is not None:
                yield trainer_pb2.WatchResponse(log_line=event.line)
