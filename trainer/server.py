"""Assemble and run a Trainer: core, servicer, health and reflection on one
grpc.aio server.

``create_server(config)`` returns ``(server, port)`` with the server started
and the scheduler running; stopping the server closes the core (running jobs
keep running unless ``config.stop_jobs_on_exit``). The core is reachable as
``server.trainer``.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from rpc import server as rpc_server
from rpc.security import ServerSecurity, require_tokens_off_loopback
from trainer.config import TrainerConfig
from trainer.service import TrainerService
from trainer.servicer import TrainerServicer
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name


# The environment variable with the tokens `trainer serve` requires.
TOKENS_ENV = "TRAINER_AUTH_TOKENS"


async def create_server(
    config: TrainerConfig, sampler=None, security: ServerSecurity | None = None
) -> tuple[grpc.aio.Server, int]:
    """Build and start a Trainer server on ``config.host:config.port`` (0 picks
    a port); ``sampler`` replaces the machine's load sampler (tests).
    ``security`` adds TLS, bearer tokens and limits (rpc.security). The
    Trainer starts processes: off loopback it refuses to start without
    tokens (ValueError)."""
    security = security or ServerSecurity()
    require_tokens_off_loopback(config.host, security, "the Trainer", TOKENS_ENV)
    credentials = security.credentials()  # unreadable TLS files fail here, before anything starts
    service = TrainerService(config, sampler)
    await service.start()
    try:
        server = security.new_server()
        trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(service), server)
        standard = rpc_server.StandardServices(server, [SERVICE_NAME])
        host = config.host
        address = f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"
        port = rpc_server.bind(server, address, credentials)
        await server.start()
        await standard.set_serving(True)
    except BaseException:
        await service.close()
        raise

    async def close_when_stopped() -> None:
        await server.wait_for_termination()
        await service.close()

    closer = asyncio.ensure_future(close_when_stopped())
    server.trainer = service
    server.trainer_closer = closer
    log.info("trainer listening on %s:%d (state %s)", host, port, config.state_dir)
    return server, port


async def stop_server(server: grpc.aio.Server, grace: float = 2.0) -> None:
    """Stop the server and wait until the core is closed."""
    await server.stop(grace)
    await server.trainer_closer
