"""``trainer sweep start|status|list|kill``: the sweep commands of the client.

  trainer sweep start movie --label 影视 --space epochs=5,10,20 --space embedding_dim=16:128:log \\
      --budget 6 --parallel 2 --metric f1 [--grid | --seed 7] [--wait]
  trainer sweep status SWEEP_ID | trainer sweep kill SWEEP_ID | trainer sweep list [--state running]

``--space NAME=V1,V2,...`` tries those values; ``--space NAME=MIN:MAX[:log][:POINTS]``
a range (linear unless ``log``; a grid takes POINTS points of it, default 3).
"""

from __future__ import annotations

import argparse
import time

from google.protobuf import json_format

from trainer.v1 import trainer_pb2

_HYPERPARAMETERS = [f.name for f in trainer_pb2.Hyperparameters.DESCRIPTOR.fields]
_STATES = [
    n.removeprefix("SWEEP_STATE_").lower()
    for n in trainer_pb2.SweepState.keys()
    if not n.endswith("UNSPECIFIED")
]
POLL_S = 1.0


def parse_space(text: str) -> tuple[str, trainer_pb2.SearchSpace]:
    """``NAME=1,2,3`` or ``NAME=MIN:MAX[:log][:POINTS]`` (argparse type)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"give NAME=V1,V2,... or NAME=MIN:MAX[:log][:POINTS], got {text!r}")
    try:
        if ":" not in rest:
            return name, trainer_pb2.SearchSpace(
                values=trainer_pb2.ValueList(values=[float(v) for v in rest.split(",")])
            )
        parts = rest.split(":")
        lo, hi, extra = float(parts[0]), float(parts[1]), parts[2:]
        scale = trainer_pb2.SCALE_LINEAR
        if extra and extra[0] in ("log", "linear"):
            scale = trainer_pb2.SCALE_LOG if extra.pop(0) == "log" else trainer_pb2.SCALE_LINEAR
        points = int(extra.pop(0)) if extra else 0
        if extra:
            raise ValueError("too many parts")
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"give NAME=V1,V2,... or NAME=MIN:MAX[:log][:POINTS], got {text!r}"
        ) from None
    return name, trainer_pb2.SearchSpace(
        range=trainer_pb2.Range(min=lo, max=hi, scale=scale, grid_points=points)
    )


def add_parser(sub, client: argparse.ArgumentParser) -> None:
    sweep = sub.add_parser("sweep", help="hyperparameter sweeps: start, status, list, kill")
    cmds = sweep.add_subparsers(dest="sweep_command", required=True)

    start = cmds.add_parser("start", parents=[client], help="start a sweep")
    start.add_argument("model", help="model to train, e.g. movie")
    start.add_argument("--label", required=True, help="label the model predicts, e.g. 影视")
    start.add_argument("--recipe", default="", help="recipe from the server's registry (default: fasttext)")
    start.add_argument("--corpus", default="", help="corpus path relative to the server's data root")
    start.add_argument(
        "--space",
        action="append",
        default=[],
        type=parse_space,
        required=True,
        metavar="NAME=V1,V2|MIN:MAX[:log][:POINTS]",
        help="a hyperparameter's candidates (repeatable)",
    )
    start.add_argument("--grid", action="store_true", help="grid search (default: random)")
    start.add_argument("--seed", type=int, default=0, help="random search seed")
    start.add_argument("--budget", type=int, required=True, help="most trials")
    start.add_argument("--parallel", type=int, default=1, help="most trials at once (default 1)")
    start.add_argument("--metric", default="f1", help="held-out metric to rank trials (default f1)")
    start.add_argument("--direction", choices=["max", "min"], default="max", help="better is larger (max)")
    start.add_argument("--idempotency-key", default="")
    start.add_argument(
        "--priority", choices=["low", "normal", "high"], default="normal", help="of every trial"
    )
    for name in _HYPERPARAMETERS:
        start.add_argument("--" + name.replace("_", "-"), type=int, help=f"fixed hyperparameter {name}")
    start.add_argument("--wait", action="store_true", help="poll the sweep until it ends")
    start.set_defaults(run=_start)

    status = cmds.add_parser("status", parents=[client], help="show a sweep, its trials and the best")
    status.add_argument("sweep_id")
    status.set_defaults(run=_status)

    kill = cmds.add_parser("kill", parents=[client], help="kill a sweep and its trials")
    kill.add_argument("sweep_id")
    kill.set_defaults(run=_kill)

    listing = cmds.add_parser("list", parents=[client], help="list sweeps, newest first")
    listing.add_argument("--state", action="append", default=[], choices=_STATES, help="only this state")
    listing.add_argument("--limit", type=int, default=0, help="most sweeps to list (default 100)")
    listing.set_defaults(run=_list)


def _start(stub, args) -> int:
    base = {n: getattr(args, n) for n in _HYPERPARAMETERS if getattr(args, n) is not None}
    spec = trainer_pb2.SweepSpec(
        recipe=args.recipe,
        model=args.model,
        label=args.label,
        corpus=args.corpus,
        base_hyperparameters=trainer_pb2.Hyperparameters(**base),
        algorithm=trainer_pb2.SEARCH_ALGORITHM_GRID if args.grid else trainer_pb2.SEARCH_ALGORITHM_RANDOM,
        seed=args.seed,
        trial_budget=args.budget,
        max_parallel_trials=args.parallel,
        metric=args.metric,
        priority=trainer_pb2.Priority.Value("PRIORITY_" + args.priority.upper()),
        direction=(
            trainer_pb2.METRIC_DIRECTION_MAXIMIZE
            if args.direction == "max"
            else trainer_pb2.METRIC_DIRECTION_MINIMIZE
        ),
    )
    for name, space in args.space:
        spec.search_space[name].CopyFrom(space)
    request = trainer_pb2.StartSweepRequest(spec=spec, idempotency_key=args.idempotency_key)
    sweep = stub.StartSweep(request, timeout=args.timeout).sweep
    _print(sweep, args)
    if not args.wait:
        return 0
    ended = (
        trainer_pb2.SWEEP_STATE_SUCCEEDED,
        trainer_pb2.SWEEP_STATE_FAILED,
        trainer_pb2.SWEEP_STATE_KILLED,
    )
    while sweep.state not in ended:
        time.sleep(POLL_S)
        sweep = stub.GetSweep(
            trainer_pb2.GetSweepRequest(sweep_id=sweep.sweep_id), timeout=args.timeout
        ).sweep
    _print(sweep, args)
    return 0 if sweep.state == trainer_pb2.SWEEP_STATE_SUCCEEDED else 1


def _status(stub, args) -> int:
    _print(
        stub.GetSweep(trainer_pb2.GetSweepRequest(sweep_id=args.sweep_id), timeout=args.timeout).sweep, args
    )
    return 0


def _kill(stub, args) -> int:
    _print(
        stub.KillSweep(trainer_pb2.KillSweepRequest(sweep_id=args.sweep_id), timeout=args.timeout).sweep, args
    )
    return 0


def _list(stub, args) -> int:
    states = [trainer_pb2.SweepState.Value("SWEEP_STATE_" + s.upper()) for s in args.state]
    reply = stub.ListSweeps(
        trainer_pb2.ListSweepsRequest(states=states, limit=args.limit), timeout=args.timeout
    )
    if args.json:
        print(json_format.MessageToJson(reply, ensure_ascii=False))
        return 0
    for s in reply.sweeps:
        best = f"best {s.spec.metric} {s.best.metric:.3f}" if s.HasField("best") else "no best yet"
        done = sum(t.state == trainer_pb2.JOB_STATE_SUCCEEDED for t in s.trials)
        print(
            f"{s.sweep_id:30s} {_state(s):9s} {s.spec.model:10s} {done}/{len(s.trials)} trials  {best}  {s.reason[:80]}"
        )
    return 0


def _state(sweep) -> str:
    return trainer_pb2.SweepState.Name(sweep.state).removeprefix("SWEEP_STATE_")


def _hp(hp, names) -> str:
    return " ".join(f"{n}={getattr(hp, n)}" for n in names)


def _print(sweep, args) -> None:
    if args.json:
        print(json_format.MessageToJson(sweep, ensure_ascii=False))
        return
    spec = sweep.spec
    names = sorted(spec.search_space)
    direction = trainer_pb2.MetricDirection.Name(spec.direction).removeprefix("METRIC_DIRECTION_").lower()
    print(
        f"sweep {sweep.sweep_id}  {_state(sweep)}  {spec.recipe} {spec.model} ({spec.label})  "
        f"{direction} {spec.metric}, {spec.max_parallel_trials} at a time"
    )
    print(f"  reason: {sweep.reason}")
    for t in sweep.trials:
        state = trainer_pb2.JobState.Name(t.state).removeprefix("JOB_STATE_") if t.job_id else "NOT STARTED"
        metric = f"{spec.metric} {t.metric:.3f}" if t.HasField("metric") else ""
        mark = "*" if sweep.HasField("best") and sweep.best.index == t.index else " "
        print(
            f" {mark}trial {t.index:<3d} {_hp(t.hyperparameters, names):30s} {state:11s} {metric:12s} {t.job_id}"
        )
    if sweep.HasField("final_job"):
        job = sweep.final_job
        print(
            f"  final job {job.job_id}: {trainer_pb2.JobState.Name(job.state).removeprefix('JOB_STATE_')} {job.reason}"
        )
