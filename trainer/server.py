"""Assemble and run a Trainer: core, servicer, health and reflection on one
grpc.aio server.

``create_server(config)`` returns a started ``rpc.server.ServerHandle`` whose
``app`` is the core (``TrainerService``) with its scheduler running;
``handle.stop(grace)`` stops the server, then closes the core (running jobs
keep running unless ``config.stop_jobs_on_exit``).
"""

from __future__ import annotations

import logging

from rpc import server as rpc_server
from rpc.addresses import host_port
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
    config: TrainerConfig, sampler=None, security: ServerSecurity | None = None, executor=None
) -> rpc_server.ServerHandle[TrainerService]:
    """Build and start a Trainer server on ``config.host:config.port`` (0 picks
    a port); ``sampler`` replaces the machine's load sampler (tests).
    ``executor`` replaces the one ``config.executor`` names (tests). ``security`` adds TLS, bearer tokens and limits (rpc.security). The
    Trainer starts processes: off loopback it refuses to start without
    tokens (rpc.security.TokensRequired, a ValueError). A taken port raises
    rpc.server.PortInUse."""
    security = security or ServerSecurity()
    require_tokens_off_loopback(config.host, security, "the Trainer", TOKENS_ENV)
    security.credentials()  # unreadable TLS files fail here, before any job is touched
    service = TrainerService(config, sampler, executor)
    handle = await rpc_server.start_server(
        service,
        host=config.host,
        port=config.port,
        security=security,
        service_names=[SERVICE_NAME],
        add_servicers=lambda server: trainer_pb2_grpc.add_TrainerServicer_to_server(
            TrainerServicer(service), server
        ),
        close_app=service.close,
        on_bound=service.start,  # a second Trainer on this port touches no job
    )
    log.info("trainer listening on %s (state %s)", host_port(config.host, handle.port), config.state_dir)
    return handle
