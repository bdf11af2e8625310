"""``trainer sweep start|status|show|plot|list|kill``: the sweep commands of the client.

  trainer sweep start movie --label 影视 --space epochs=5,10,20 --space embedding_dim=16:128:log \\
      --budget 6 --parallel 2 --metric f1 [--algorithm tpe|random|grid] [--seed 7] \\
      [--pruner median|successive-halving|hyperband --pruner-arg warmup_epochs=1] [--wait]
  trainer sweep status SWEEP_ID | trainer sweep show SWEEP_ID | trainer sweep kill SWEEP_ID
  trainer sweep plot SWEEP_ID --out FILE.png | trainer sweep list [--state running]

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
_PRUNER_ARGS = [f.name for f in trainer_pb2.Pruner.DESCRIPTOR.fields if f.name != "kind"]


def _pruner_arg(text: str) -> tuple[str, int]:
    """``NAME=N`` for a Pruner field (argparse type)."""
    name, sep, value = text.partition("=")
    if not sep or name not in _PRUNER_ARGS or not value.isdigit():
        raise argparse.ArgumentTypeError(
            f"give NAME=N with NAME one of {', '.join(_PRUNER_ARGS)}, got {text!r}"
        )
    return name, int(value)


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
    start.add_argument(
        "--label",
        required=True,
        action="append",
        help="label the model predicts, e.g. 影视; repeat it to sweep one multi-label model (a bundle)",
    )
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
    start.add_argument(
        "--algorithm", choices=["tpe", "random", "grid"], default="", help="search algorithm (default: tpe)"
    )
    start.add_argument("--grid", action="store_true", help="grid search (as --algorithm grid)")
    start.add_argument("--seed", type=int, default=0, help="sampler seed")
    start.add_argument(
        "--startup-trials", type=int, default=0, help="TPE: random trials first (default: auto)"
    )
    start.add_argument(
        "--pruner",
        choices=["none", "median", "successive-halving", "hyperband"],
        default="none",
        help="stop poor trials early from their per-epoch held-out metric (default: none)",
    )
    start.add_argument(
        "--pruner-arg",
        action="append",
        default=[],
        type=_pruner_arg,
        metavar="NAME=N",
        help=f"a pruner parameter ({', '.join(_PRUNER_ARGS)}; repeatable)",
    )
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

    show = cmds.add_parser(
        "show", parents=[client], help="a sweep's trials as a table: state, per-epoch values, metric"
    )
    show.add_argument("sweep_id")
    show.set_defaults(run=_show)

    plot = cmds.add_parser(
        "plot", parents=[client], help="draw best metric vs compute (trial-epochs), one line per trial"
    )
    plot.add_argument("sweep_id")
    plot.add_argument("--out", required=True, help="the PNG file to write")
    plot.set_defaults(run=_plot)

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
        label=args.label[0] if len(args.label) == 1 else "",
        labels=args.label if len(args.label) > 1 else [],
        corpus=args.corpus,
        base_hyperparameters=trainer_pb2.Hyperparameters(**base),
        algorithm=trainer_pb2.SearchAlgorithm.Value(
            "SEARCH_ALGORITHM_" + ("grid" if args.grid else args.algorithm or "tpe").upper()
        ),
        seed=args.seed,
        startup_trials=args.startup_trials,
        pruner=trainer_pb2.Pruner(
            kind=trainer_pb2.PrunerKind.Value("PRUNER_KIND_" + args.pruner.upper().replace("-", "_")),
            **dict(args.pruner_arg),
        ),
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


def _get(stub, args):
    return stub.GetSweep(trainer_pb2.GetSweepRequest(sweep_id=args.sweep_id), timeout=args.timeout).sweep


def _show(stub, args) -> int:
    sweep = _get(stub, args)
    if args.json:
        print(json_format.MessageToJson(sweep, ensure_ascii=False))
        return 0
    for line in table(sweep):
        print(line)
    return 0


def table(sweep) -> list[str]:
    """``trainer sweep show``: one row per trial, the best starred."""
    spec = sweep.spec
    names = sorted(spec.search_space)
    algorithm = trainer_pb2.SearchAlgorithm.Name(spec.algorithm).removeprefix("SEARCH_ALGORITHM_")
    pruner = trainer_pb2.PrunerKind.Name(spec.pruner.kind).removeprefix("PRUNER_KIND_")
    lines = [
        f"sweep {sweep.sweep_id}  {_state(sweep)}  {algorithm} search, pruner {pruner}, "
        f"{len(sweep.trials)}/{spec.trial_budget} trials, {sweep.trial_epochs} trial-epochs",
        f"  reason: {sweep.reason}",
        f"  {'':1s}{'trial':5s} {'hyperparameters':30s} {'state':9s} {'epochs':6s} "
        f"{'last value':10s} {spec.metric:8s} job",
    ]
    for t in sweep.trials:
        state = trainer_pb2.TrialState.Name(t.trial_state).removeprefix("TRIAL_STATE_")
        values = list(t.intermediate_values)
        last = f"{values[-1].value:.3f}" if values else "-"
        metric = f"{t.metric:.3f}" if t.HasField("metric") else "-"
        mark = "*" if sweep.HasField("best") and sweep.best.index == t.index else " "
        lines.append(
            f"  {mark}{t.index:<5d} {_hp(t.hyperparameters, names):30s} {state:9s} "
            f"{(str(values[-1].epoch) if values else '-'):6s} {last:10s} {metric:8s} {t.job_id}"
        )
    if sweep.HasField("best"):
        lines.append(f"  best so far: trial {sweep.best.index}, {spec.metric} {sweep.best.metric:.3f}")
    return lines


def _plot(stub, args) -> int:
    import pathlib

    try:
        from trainer import sweep_plot
    except ImportError:  # pragma: no cover - the message is the point
        print("trainer sweep plot needs matplotlib: pip install 'text-labeler[plot]'")
        return 2
    sweep = _get(stub, args)
    try:
        sweep_plot.plot(sweep, pathlib.Path(args.out))
    except ImportError:
        print("trainer sweep plot needs matplotlib: pip install 'text-labeler[plot]'")
        return 2
    print(f"wrote {args.out}: {len(sweep.trials)} trials over {sweep.trial_epochs} trial-epochs")
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
        done = sum(t.trial_state == trainer_pb2.TRIAL_STATE_COMPLETE for t in s.trials)
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
        f"sweep {sweep.sweep_id}  {_state(sweep)}  {spec.recipe} {spec.model} ({spec.label or ', '.join(spec.labels)})  "
        f"{direction} {spec.metric}, {spec.max_parallel_trials} at a time"
    )
    print(f"  reason: {sweep.reason}")
    for t in sweep.trials:
        state = trainer_pb2.JobState.Name(t.state).removeprefix("JOB_STATE_") if t.job_id else "NOT STARTED"
        if t.trial_state == trainer_pb2.TRIAL_STATE_PRUNED:
            state = "PRUNED"
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
