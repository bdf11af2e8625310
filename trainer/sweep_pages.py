"""Sweep responses that fit a default client (4 MiB): ListSweeps paged by
size, and any one sweep cut to a bound (specs are bounded at StartSweep, but
a store may hold sweeps from before the bound). Shapes converted messages
(trainer.converters); the servicer uses it."""

from __future__ import annotations

from rpc.errors import InvalidArgument
from trainer.converters import sweep_proto
from trainer.domain import SweepView
from trainer.v1 import trainer_pb2

# A ListSweeps response stops before this many bytes; the rest comes with
# next_page_token. One sweep in a list is cut to MAX_LISTED_SWEEP_BYTES, one
# in GetSweep / KillSweep to MAX_SWEEP_BYTES.
MAX_LIST_BYTES = 2 * 1024 * 1024
MAX_LISTED_SWEEP_BYTES = 256 * 1024
MAX_SWEEP_BYTES = 3 * 1024 * 1024
SHOWN_VALUES = 64


def fit(sweep: trainer_pb2.Sweep, limit: int = MAX_SWEEP_BYTES) -> trainer_pb2.Sweep:
    """``sweep`` within ``limit`` bytes: if larger, its spec's value lists
    keep their first SHOWN_VALUES values, and its reason says so."""
    if sweep.ByteSize() <= limit:
        return sweep
    cut = []
    for name, space in sweep.spec.search_space.items():
        values = space.values.values
        if space.WhichOneof("kind") == "values" and len(values) > SHOWN_VALUES:
            cut.append(f"{name} ({len(values)})")
            del values[SHOWN_VALUES:]
    sweep.spec.validation.held_out_corpus = sweep.spec.validation.held_out_corpus[:1024]
    if cut:
        sweep.reason += (
            f" [this response shows the first {SHOWN_VALUES} values of spec.search_space {', '.join(cut)}]"
        )
    return sweep


def page_seq(token: str) -> int:
    """The store position a ListSweeps page_token continues from (0: the start)."""
    if not token:
        return 0
    if not token.isdigit() or len(token) > 18:
        raise InvalidArgument("page_token must be a next_page_token from an earlier ListSweeps response")
    return int(token)


def list_sweeps_response(views: list[SweepView]) -> trainer_pb2.ListSweepsResponse:
    """Sweeps in order until the next would pass MAX_LIST_BYTES (at least one)."""
    reply = trainer_pb2.ListSweepsResponse()
    size = 0
    for i, view in enumerate(views):
        sweep = fit(sweep_proto(view), MAX_LISTED_SWEEP_BYTES)
        size += sweep.ByteSize() + 8
        if i and size > MAX_LIST_BYTES:
            reply.next_page_token = str(views[i - 1].sweep.seq)
            break
        reply.sweeps.append(sweep)
    return reply
