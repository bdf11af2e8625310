"""Graceful shutdown: SIGTERM to a real ``labeler serve`` process under load.

Health goes NOT_SERVING first; for a moment the server then refuses new
calls with UNAVAILABLE (rpc.server.serve_until_signal) and lets the calls
it accepted finish, then stops and the process exits 0.

- A polite client (it stops starting calls once health says NOT_SERVING, as
  a load balancer or client-side health checking does) sees only answers and
  UNAVAILABLE refusals: no call it made was accepted and then lost.
- A rude client that ignores health and keeps calling after the process is
  gone sees answers and UNAVAILABLE; no call fails after the Labeler took it
  (no "no label could be scored", no INTERNAL, no deadline). gRPC itself may
  reset a call that reached the server in the very instant it stopped, before
  any handler took it: that one ends CANCELLED (see docs/reliability.md).
"""

from __future__ import annotations

import signal
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rpc.security import open_channel
from tests.reliability.conftest import start_labeler
from tests.support.labeler_support import wait_until
from tests.support.procs import Load, wait_serving

pytestmark = pytest.mark.timeout(180)

SERVICE = "labeler.v1.Labeler"
REFUSED = "the server is shutting down; retry (another replica)"
CONNECTION_REFUSED = "failed to connect to all addresses"
# What the Labeler says when it took a call and could not score any label.
ACCEPTED_THEN_FAILED = "no label could be scored"


class HealthWatch:
    """Follows the health Watch stream; ``not_serving`` is set on NOT_SERVING."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.statuses: list[int] = []
        self.ended_with: grpc.StatusCode | None = None
        self.not_serving = threading.Event()
        self._call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for reply in self._call:
                self.statuses.append(reply.status)
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    self.not_serving.set()
        except grpc.RpcError as err:
            self.ended_with = err.code()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def test_sigterm_under_load_drops_no_accepted_call(secure_stack, pki, tmp_path):
    labeler = start_labeler(tmp_path, secure_stack.model_root, secure_stack.modelserver.target, pki)
    try:
        with (
            open_channel(labeler.target, secure_stack.labeler_client) as polite_channel,
            open_channel(labeler.target, secure_stack.labeler_client) as rude_channel,
        ):
            wait_serving(polite_channel, SERVICE)
            watch = HealthWatch(polite_channel)
            wait_until(lambda: watch.statuses, 10, what="the first health status")
            polite = Load(polite_channel, workers=3, seed=11, until=watch.not_serving).start()
            rude = Load(rude_channel, workers=2, seed=12).start()
            try:
                wait_until(
                    lambda: polite.total >= 100 and rude.total >= 50, 60, what="load before the signal"
                )
                answered_before = polite.outcomes["OK"] + rude.outcomes["OK"]
                labeler.proc.send_signal(signal.SIGTERM)
                code = labeler.proc.wait(60)
                after_exit = rude.total
                wait_until(lambda: rude.total >= after_exit + 20, 30, what="calls after the exit")
            finally:
                polite.stop()
                rude.stop()
            watch.join(10)
    finally:
        labeler.stop()
    output = labeler.output()
    assert code == 0, output
    assert "signal received: draining" in output
    # SERVING, then NOT_SERVING, before the stream was cut.
    assert watch.statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse.NOT_SERVING in watch.statuses, (watch.statuses, watch.ended_with)

    # The polite client: answers and refusals, nothing else.
    assert set(polite.outcomes) <= {"OK", "UNAVAILABLE"}, polite.failures[:5]
    assert all(details == REFUSED for _, details in polite.failures), polite.failures[:5]
    # The rude one: refused by the draining server, then by the closed port.
    rude_failures = {details[:40] for _, details in rude.failures}
    assert set(rude.outcomes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, rude.failures[:5]
    assert not [d for _, d in rude.failures if ACCEPTED_THEN_FAILED in d], rude.failures[:5]
    assert all(
        d == REFUSED or d.startswith(CONNECTION_REFUSED) or (c, d) == ("CANCELLED", "CANCELLED")
        for c, d in rude.failures
    ), rude.failures[:5]
    assert any(d.startswith(CONNECTION_REFUSED) for _, d in rude.failures)
    # At most the one call per rude worker that gRPC held, not yet handed over, at the stop instant.
    assert rude.outcomes["CANCELLED"] <= 2, rude.failures
    answered = polite.outcomes["OK"] + rude.outcomes["OK"]
    print(
        f"\nshutdown: {answered} calls answered ({answered - answered_before} after the signal was sent); "
        f"polite client: {dict(polite.outcomes)}; rude client: {dict(rude.outcomes)}; "
        f"refusals seen: {sorted(rude_failures)}"
    )
