"""The processes bench.flood starts (each pinned to a core with taskset):

    python -m bench.flood_load gen --target HOST:PORT --vocab FILE (--rate R | --callers C) ...
    python -m bench.flood_load full-labeler --config FILE --layer interceptor

- ``gen``: the Python load generator (grpc.aio). Every call carries a fresh
  12-word document drawn from the corpus vocabulary (so the prediction cache
  cannot answer it), built before the timed window. Open loop (``--rate``:
  calls start on schedule whatever the answers, as independent clients do)
  or closed loop (``--callers``). Prints one JSON line: outcome counts,
  latency of the answered calls, how fast each other outcome came, pushbacks.
- ``full-labeler``: a Labeler (``labeler.server.create_server``, real
  interceptors) whose admission is full (one call holds the only slot, one
  waits in the only queue place, both through the gate's own API), so every
  further Classify is refused; ``--layer`` picks where the refusal happens
  (bench.flood's layer table; ``floor``: a bare grpc.aio server instead). Prints ``READY <port>`` and runs until stdin
  closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import sys
import time

import grpc

from labeler.v1 import labeler_pb2

WORDS_PER_DOCUMENT = 12
PUSHBACK = "grpc-retry-pushback-ms"


def fresh_documents(vocabulary: list[str], n: int, seed: int) -> list[bytes]:
    """``n`` serialized ClassifyRequests, each a new 12-word document."""
    rng = random.Random(seed)
    return [
        labeler_pb2.ClassifyRequest(
            words=rng.choices(vocabulary, k=WORDS_PER_DOCUMENT), threshold=0
        ).SerializeToString()
        for _ in range(n)
    ]


def _channels(target: str, count: int) -> list[grpc.aio.Channel]:
    # A local subchannel pool per channel: otherwise gRPC shares one
    # connection between channels with the same target and arguments.
    return [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]


class Outcomes:
    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.seconds: dict[str, list[float]] = {}
        self.pushbacks = 0

    def add(self, code: str, seconds: float, pushback: bool = False) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        self.seconds.setdefault(code, []).append(seconds)
        self.pushbacks += pushback

    def summary(self) -> dict:
        def pct(values: list[float], q: float) -> float:
            values = sorted(values)
            return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 1) if values else None

        return {
            "codes": self.codes,
            "pushbacks": self.pushbacks,
            "p50_ms": {c: pct(v, 0.5) for c, v in self.seconds.items()},
            "p99_ms": {c: pct(v, 0.99) for c, v in self.seconds.items()},
        }


async def _call(classify, payload: bytes, timeout: float, out: Outcomes) -> None:
    start = time.perf_counter()
    try:
        await classify(payload, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        trailers = exc.trailing_metadata() or ()
        out.add(exc.code().name, time.perf_counter() - start, any(k == PUSHBACK for k, _ in trailers))
        return
    out.add("OK", time.perf_counter() - start)


def _classify(channel: grpc.aio.Channel):
    return channel.unary_unary(
        "/labeler.v1.Labeler/Classify",
        request_serializer=None,
        response_deserializer=labeler_pb2.ClassifyResponse.FromString,
    )


async def generate(args: argparse.Namespace) -> dict:
    vocabulary = json.loads(pathlib.Path(args.vocab).read_text(encoding="utf-8"))
    rate, callers = args.rate, args.callers
    total = int(rate * args.seconds) if rate else int(args.seconds * 4000)
    payloads = fresh_documents(vocabulary, total + 64, args.seed)
    channels = _channels(args.target, args.connections)
    stubs = [_classify(c) for c in channels]
    for i, stub in enumerate(stubs):  # connect (and warm up) every connection first
        await _call(stub, payloads[-1 - i % 64], 5.0, Outcomes())
    out = Outcomes()
    start = time.perf_counter()
    if rate:
        tasks: set[asyncio.Task] = set()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(_call(stubs[i % len(stubs)], payloads[i], args.deadline, out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
        sent = total
    else:
        end = start + args.seconds
        counter = iter(range(total))

        async def caller(k: int) -> None:
            while time.perf_counter() < end:
                i = next(counter, None)
                if i is None:
                    return
                await _call(stubs[k % len(stubs)], payloads[i], args.deadline, out)

        await asyncio.gather(*(caller(k) for k in range(callers)))
        sent_s = time.perf_counter() - start
        sent = sum(out.codes.values())
    for channel in channels:
        await channel.close()
    return {"sent": sent, "sent_s": round(sent_s, 3), "offered_rps": round(sent / sent_s, 1), **out.summary()}


async def floor_server() -> None:
    """The floor: a bare grpc.aio server (no interceptors, no Labeler) that
    answers every call as the prebuilt refusal does. What any refusal in
    Python costs at least."""

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> None:
        context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        context.set_details("full")
        context.set_trailing_metadata(((PUSHBACK, "50"),))

    handler = grpc.unary_unary_rpc_method_handler(refuse)

    class Everything(grpc.GenericRpcHandler):
        def service(self, handler_call_details):
            return handler

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((Everything(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


async def full_labeler(args: argparse.Namespace) -> None:
    from labeler.server import create_server

    if args.layer == "floor":
        await floor_server()
        return
    handle = await create_server(args.config, admission_layer=args.layer)
    app = handle.app
    await app.wait_ready(120)
    assert await app.admission.enter(None) is None  # the only slot
    waiter = asyncio.ensure_future(app.admission.enter(None))  # the only queue place
    while app.admission.slots.queued < 1:
        await asyncio.sleep(0.01)
    print(f"READY {handle.port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    waiter.cancel()
    await handle.stop(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood_load")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("gen")
    gen.add_argument("--target", required=True)
    gen.add_argument("--vocab", required=True)
    gen.add_argument("--rate", type=float, default=0.0)
    gen.add_argument("--callers", type=int, default=0)
    gen.add_argument("--seconds", type=float, default=3.0)
    gen.add_argument("--connections", type=int, default=1)
    gen.add_argument("--deadline", type=float, default=0.3)
    gen.add_argument("--seed", type=int, default=0)
    full = commands.add_parser("full-labeler")
    full.add_argument("--config", required=True)
    full.add_argument("--layer", default="interceptor")
    args = parser.parse_args(argv)
    if args.command == "gen":
        if bool(args.rate) == bool(args.callers):
            parser.error("give --rate or --callers")
        print(json.dumps(asyncio.run(generate(args))), flush=True)
    else:
        asyncio.run(full_labeler(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
