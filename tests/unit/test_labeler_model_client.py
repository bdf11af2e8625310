"""labeler.model_client's retry loop against a scripted fake model server (an
in-process gRPC PredictionService/ModelService on 127.0.0.1:0; no TensorFlow):
UNAVAILABLE is retried with backoff while the caller's deadline allows, every
attempt carries only the time left, DEADLINE_EXCEEDED and the other codes are
not retried, and a server known to be down fails fast.

The channel's own retry policy (up to 3 attempts on UNAVAILABLE) sits under the
client's loop, so the fake server may see up to 3 calls per client attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import grpc
import numpy as np
import pytest

from labeler import model_client
from labeler.domain import ModelCallError
from labeler.model_client import ModelServerClient
from tfserving.protos import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    types_pb2,
)

# Guards against a loop that never gives up; no test waits this long when it passes.
TEST_TIMEOUT_S = 60.0
FEATURES = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int32)


@dataclasses.dataclass
class Step:
    """What the fake server does with one call: fail with ``code``, or stall
    for ``stall_s`` first (then answer, unless the caller gave up)."""

    code: grpc.StatusCode | None = None
    details: str = ""
    stall_s: float = 0.0


def fail(code: grpc.StatusCode, details: str = "") -> Step:
    return Step(code, details or f"scripted {code.name}")


OK = Step()


@dataclasses.dataclass
class Received:
    method: str
    time_remaining: float | None
    request: object


class FakeModelServer(
    prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer
):
    """Plays ``script`` one step per call (its last step for every call after)."""

    def __init__(self, script: list[Step], version: int = 42) -> None:
        self.script = script
        self.version = version
        self.received: list[Received] = []

    async def _play(self, method: str, request, context) -> None:
        self.received.append(Received(method, context.time_remaining(), request))
        step = self.script[min(len(self.received), len(self.script)) - 1]
        if step.stall_s:
            await asyncio.sleep(step.stall_s)
        if step.code is not None:
            await context.abort(step.code, step.details)

    async def Predict(self, request, context):
        await self._play("Predict", request, context)
        rows = request.inputs["input"].tensor_shape.dim[0].size
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.version
        out = response.outputs["probability"]
        out.dtype = types_pb2.DT_FLOAT
        out.tensor_shape.dim.add(size=rows)
        out.tensor_shape.dim.add(size=1)
        out.float_val.extend([0.25 * (i + 1) for i in range(rows)])
        return response

    async def GetModelStatus(self, request, context):
        await self._play("GetModelStatus", request, context)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = self.version
        status.state = get_model_status_pb2.ModelVersionStatus.State.Value("AVAILABLE")
        return response


async def start(fake: FakeModelServer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(fake, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def with_fake_server(script: list[Step], test) -> FakeModelServer:
    """Run ``await test(client, loop)`` against a fake server playing ``script``."""
    fake = FakeModelServer(script)

    async def main() -> None:
        server, target = await start(fake)
        client = ModelServerClient(target)
        try:
            await asyncio.wait_for(test(client, asyncio.get_running_loop()), TEST_TIMEOUT_S)
        finally:
            await client.close()
            await server.stop(None)

    asyncio.run(main())
    return fake


async def predict(client: ModelServerClient, deadline: float, **kw):
    return await client.predict(
        "movie", 7, "serving_default", "input", "probability", FEATURES, deadline, **kw
    )


def test_a_predict_names_the_pinned_version_and_reads_the_answer():
    async def test(client, loop):
        result = await predict(client, loop.time() + 30)
        assert result.probabilities.tolist() == [0.25, 0.5, 0.75]
        assert result.version == 42  # the version that answered, from the response

    fake = with_fake_server([OK], test)
    [call] = fake.received
    spec = call.request.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("movie", 7, "serving_default")
    assert [d.size for d in call.request.inputs["input"].tensor_shape.dim] == [3, 2]


def test_unavailable_is_retried_until_the_server_answers():
    async def test(client, loop):
        result = await predict(client, loop.time() + 30)
        assert result.probabilities.tolist() == [0.25, 0.5, 0.75]

    # More failures in a row than the channel's own 3 attempts: the client's loop retries.
    script = [fail(grpc.StatusCode.UNAVAILABLE)] * 7 + [OK]
    fake = with_fake_server(script, test)
    assert len(fake.received) == 8


def test_model_status_goes_through_the_same_retries():
    async def test(client, loop):
        assert await client.model_status("movie", timeout=30) == [(42, "AVAILABLE", "")]

    fake = with_fake_server([fail(grpc.StatusCode.UNAVAILABLE)] * 4 + [OK], test)
    assert [r.method for r in fake.received] == ["GetModelStatus"] * 5


class PauseRecorder:
    """labeler.model_client's view of ``asyncio``: real, but it notes every
    pause the client asks for (its backoff), so a test reads the pauses
    instead of timing them."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __getattr__(self, name: str):
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result=None):
        self.pauses.append(delay)
        return await asyncio.sleep(delay, result)


def test_unavailable_until_the_deadline_fails_as_unavailable_after_growing_pauses(monkeypatch):
    budget_s = 1.5
    recorder = PauseRecorder()
    monkeypatch.setattr(model_client, "asyncio", recorder)

    async def test(client, loop):
        with pytest.raises(ModelCallError) as caught:
            await predict(client, loop.time() + budget_s)
        assert caught.value.code_name == "UNAVAILABLE"
        assert "the model server is restarting" in caught.value.message
        assert "retried for" in caught.value.message

    fake = with_fake_server([fail(grpc.StatusCode.UNAVAILABLE, "the model server is restarting")], test)
    # Retried (past the channel's own 3 attempts), with pauses between the
    # attempts that start small, grow, stay bounded and end before the deadline.
    assert len(fake.received) > 3
    pauses = recorder.pauses
    assert len(pauses) >= 4, pauses
    assert all(0 < p <= 0.5 for p in pauses), pauses
    assert max(pauses) >= 3 * pauses[0], pauses  # more than jitter: the pause grows
    assert sum(pauses) < budget_s, pauses
    # Each attempt carries only what is left of the caller's deadline (give or
    # take the few ms between the client reading its clock and gRPC's).
    remaining = [r.time_remaining for r in fake.received]
    assert all(r is not None and r <= budget_s + 0.1 for r in remaining), remaining
    assert remaining[-1] < remaining[0] - 0.1, remaining  # the budget shrinks, it is not renewed


def test_a_server_that_does_not_answer_in_time_is_not_called_again():
    async def test(client, loop):
        with pytest.raises(ModelCallError) as caught:
            await predict(client, loop.time() + 0.3)
        assert caught.value.code_name == "DEADLINE_EXCEEDED"
        assert "did not answer within" in caught.value.message

    fake = with_fake_server([Step(stall_s=5.0)], test)
    assert len(fake.received) == 1


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    ],
)
def test_other_codes_are_not_retried(code):
    async def test(client, loop):
        with pytest.raises(ModelCallError) as caught:
            await predict(client, loop.time() + 30)
        assert caught.value.code_name == code.name
        if code is not grpc.StatusCode.DEADLINE_EXCEEDED:
            assert "scripted" in caught.value.message

    fake = with_fake_server([fail(code), OK], test)
    assert len(fake.received) == 1


def test_time_running_out_after_unavailable_is_reported_as_unavailable():
    """Unreachable, then no answer before the deadline: the caller learns the
    server is unreachable, not merely slow."""

    async def test(client, loop):
        with pytest.raises(ModelCallError) as caught:
            await predict(client, loop.time() + 1.0)
        assert caught.value.code_name == "UNAVAILABLE"
        assert "retried for" in caught.value.message

    script = [fail(grpc.StatusCode.UNAVAILABLE)] * 3 + [Step(stall_s=30.0)]
    fake = with_fake_server(script, test)
    assert len(fake.received) >= 4


def test_no_retry_while_the_server_is_known_to_be_down():
    async def test(client, loop):
        with pytest.raises(ModelCallError) as caught:
            await predict(client, loop.time() + 30, retry_unavailable=False)
        assert caught.value.code_name == "UNAVAILABLE"

    fake = with_fake_server([fail(grpc.StatusCode.UNAVAILABLE)], test)
    # One attempt of the client (the channel's own policy may repeat it);
    # retrying for the 30 s deadline would make many more.
    assert 1 <= len(fake.received) <= 3


def test_nothing_listening_is_unavailable_within_the_deadline():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed now: connections to it are refused.

    async def main():
        client = ModelServerClient(f"127.0.0.1:{port}")
        try:
            loop = asyncio.get_running_loop()
            with pytest.raises(ModelCallError) as caught:
                await asyncio.wait_for(predict(client, loop.time() + 0.5), TEST_TIMEOUT_S)
            assert caught.value.code_name == "UNAVAILABLE"
            assert f"127.0.0.1:{port}" in caught.value.message
        finally:
            await client.close()

    asyncio.run(main())
