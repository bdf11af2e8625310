"""Sweeps that search and stop early, through the real gated Trainer: a
pruner stops the trials a scripted recipe makes bad on purpose (they report
a poor held-out f1 after every epoch) and keeps the good ones, also across a
Trainer SIGKILLed and restarted mid-sweep; a client's idempotency key cannot
reach a sweep's trials; list responses stay within a default client's 4 MiB
whatever the store holds. The fake recipe's trials with --threads above
``bad_above_threads`` are the bad ones."""

from __future__ import annotations

import pathlib
import time

import grpc
import pytest

from tests.integration.test_trainer_containment import OPEN, FakeTrainer
from tests.support.trainer_support import ScriptedLoad, make_config, running_trainer, write_spec
from trainer import cli
from trainer.domain import Direction, SearchSpace, SweepRecord, SweepSpec, SweepState
from trainer.gate import GatePolicy
from trainer.store import JobStore
from trainer.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(300)
S = trainer_pb2
GATE = GatePolicy(
    cpu_normal=55, cpu_danger=95, memory_normal=55, memory_danger=95, warmup_s=0, window_s=0.2, settle_s=0
)
ENDED = (S.SWEEP_STATE_SUCCEEDED, S.SWEEP_STATE_FAILED, S.SWEEP_STATE_KILLED)


def pruned_spec(corpus: str, **fields) -> S.SweepSpec:
    """Six trials over threads 1..6 (4..6 are bad), four epochs each, one at a
    time, the median pruner judging from the first epoch."""
    values = dict(
        model="movie",
        label="影视",
        corpus=corpus,
        base_hyperparameters=S.Hyperparameters(epochs=4),
        search_space={"threads": S.SearchSpace(values=S.ValueList(values=[1, 2, 3, 4, 5, 6]))},
        algorithm=S.SEARCH_ALGORITHM_GRID,
        trial_budget=6,
        max_parallel_trials=1,
        metric="f1",
        direction=S.METRIC_DIRECTION_MAXIMIZE,
        pruner=S.Pruner(kind=S.PRUNER_KIND_MEDIAN),
    )
    values.update(fields)
    return S.SweepSpec(**values)


def wait_sweep(stub, sweep_id: str, timeout: float = 180.0, until=None) -> S.Sweep:
    deadline = time.monotonic() + timeout
    while True:
        sweep = stub.GetSweep(S.GetSweepRequest(sweep_id=sweep_id), timeout=10).sweep
        if (until(sweep) if until is not None else sweep.state in ENDED) or time.monotonic() > deadline:
            return sweep
        time.sleep(0.1)


def check_pruned_and_kept(stub, sweep: S.Sweep, state_dir: pathlib.Path) -> list[S.Trial]:
    """The sweep succeeded with a good trial; the bad ones that ran after a
    good one had ended were pruned: KILLED by the pruner (not the gate),
    before their last epoch, their checkpoint and values kept."""
    assert sweep.state == S.SWEEP_STATE_SUCCEEDED, sweep.reason
    assert len(sweep.trials) == 6 and all(t.job_id for t in sweep.trials)
    pruned = [t for t in sweep.trials if t.trial_state == S.TRIAL_STATE_PRUNED]
    assert pruned, [(t.hyperparameters.threads, S.TrialState.Name(t.trial_state)) for t in sweep.trials]
    for t in pruned:
        assert t.hyperparameters.threads > 3, "a good trial was pruned"
        assert not t.HasField("metric")
        job = stub.Status(S.StatusRequest(job_id=t.job_id), timeout=10).job
        assert job.state == S.JOB_STATE_KILLED and "pruned by the sweep's median pruner" in job.reason
        assert job.attempts == 1 and job.gate.action != S.GATE_ACTION_KILL
        assert [v.value for v in t.intermediate_values] and all(v.value < 0.1 for v in t.intermediate_values)
        assert t.intermediate_values[-1].epoch < 4 and job.progress.epoch < 4  # stopped early
        assert (state_dir / "checkpoints" / t.job_id / "epoch").is_file()  # its checkpoint is kept
    good = [t for t in sweep.trials if t.hyperparameters.threads <= 3]
    assert all(t.trial_state == S.TRIAL_STATE_COMPLETE and t.metric > 0.8 for t in good)
    assert sweep.best.hyperparameters.threads <= 3 and sweep.best.trial_state == S.TRIAL_STATE_COMPLETE
    assert sweep.final_job.state == S.JOB_STATE_SUCCEEDED and sweep.final_job.model_version > 0
    assert sweep.trial_epochs < 6 * 4 and f"{len(pruned)} of 6 trials pruned" in sweep.reason
    # Nothing ran twice: one job per trial and one final job.
    jobs = stub.List(S.ListRequest(sweep_id=sweep.sweep_id), timeout=10).jobs
    assert len(jobs) == 7 and len({j.job_id for j in jobs}) == 7
    return pruned


def test_a_median_pruner_stops_the_bad_trials_and_keeps_the_good(tmp_path, capsys):
    config = make_config(tmp_path, gate=GATE)
    corpus = write_spec(config.data_root, "bad.json", epoch_s=0.3, bad_above_threads=3)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        spec = pruned_spec(corpus, seed=1)
        started = trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10).sweep
        order = [t.hyperparameters.threads for t in started.trials]
        # The grid order seed 1 gives runs a good trial first (were the first
        # ones bad, the median of ended trials would be bad and judge nothing).
        assert sorted(order) == [1, 2, 3, 4, 5, 6] and order[0] <= 3, order
        done = wait_sweep(trainer.stub, started.sweep_id)
        check_pruned_and_kept(trainer.stub, done, config.state_dir)
        assert trainer.stub.GetSweep(
            S.GetSweepRequest(sweep_id=done.sweep_id), timeout=10
        ).sweep.spec.pruner.kind == (S.PRUNER_KIND_MEDIAN)

        # `trainer sweep show` prints the table; `trainer sweep plot` draws it.
        capsys.readouterr()
        assert cli.main(["sweep", "show", done.sweep_id, "--target", trainer.target]) == 0
        shown = capsys.readouterr().out
        assert "GRID search, pruner MEDIAN" in shown and shown.count("PRUNED") >= 1
        assert shown.count("COMPLETE") == 3 and "best so far: trial" in shown
        out = tmp_path / "sweep.png"
        assert cli.main(["sweep", "plot", done.sweep_id, "--target", trainer.target, "--out", str(out)]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_client_start_cannot_reach_a_sweeps_trial_keys(tmp_path):
    """Before: a Start with idempotency_key '<sweep_id>/trial-1' (sweep ids are
    listed by ListSweeps) made that sweep FAIL."""
    config = make_config(tmp_path, gate=GATE)
    corpus = write_spec(config.data_root, "peak.json", epoch_s=0.5, f1_peak_epochs=4)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        spec = pruned_spec(corpus, pruner=None, trial_budget=3, max_parallel_trials=3)
        spec.search_space["threads"].values.ClearField("values")
        spec.search_space["threads"].values.values.extend([1, 2, 3])
        sweep_id = trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10).sweep.sweep_id
        for i in range(4):
            for key in (f"{sweep_id}/trial-{i}", f"{sweep_id}/final"):
                job = trainer.start(
                    idempotency_key=key, hyperparameters=S.Hyperparameters(epochs=1, threads=9)
                )
                assert job.sweep_id == "" and job.hyperparameters.threads == 9
        with pytest.raises(grpc.RpcError) as err:  # the sweeps' own namespace is out of reach
            trainer.start(idempotency_key=f"\x1esweep/{sweep_id}/trial-0")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "printable" in err.value.details()
        done = wait_sweep(trainer.stub, sweep_id)
        assert done.state == S.SWEEP_STATE_SUCCEEDED, done.reason
        assert {t.hyperparameters.threads for t in done.trials} == {1, 2, 3}
        jobs = trainer.stub.List(S.ListRequest(sweep_id=sweep_id), timeout=10).jobs
        assert len(jobs) == 4 and all(j.hyperparameters.threads != 9 for j in jobs)


def test_a_search_that_cannot_fill_its_budget_says_so(tmp_path):
    config = make_config(tmp_path, gate=GATE)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        spec = pruned_spec("fake.json", algorithm=S.SEARCH_ALGORITHM_RANDOM, trial_budget=100, pruner=None)
        spec.search_space["threads"].values.ClearField("values")
        spec.search_space["threads"].values.values.extend([1, 2])
        sweep = trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10).sweep
        assert len(sweep.trials) == 2
        assert "only 2 distinct configuration(s): 2 of the budget's 100 trials run" in sweep.reason
        done = wait_sweep(trainer.stub, sweep.sweep_id)
        assert done.state == S.SWEEP_STATE_SUCCEEDED and "2 of the budget's 100" in done.reason


def test_list_responses_fit_a_default_client_whatever_is_stored(tmp_path):
    """Before: one stored spec of 600,000 values (4.8 MB) made every
    ListSweeps fail with RESOURCE_EXHAUSTED for a default client, for good."""
    config = make_config(tmp_path, gate=GATE)
    config.state_dir.mkdir(parents=True)
    store = JobStore(config.database)
    huge = SearchSpace(values=tuple(float(1 + i % 200) for i in range(600_000)))
    for i in range(3):  # as stored by a Trainer from before the bound
        spec = SweepSpec(
            model="movie",
            label="影视",
            search_space={"epochs": huge},
            metric="f1",
            direction=Direction.MAXIMIZE,
            trial_budget=1,
            recipe="fake",
            corpus="fake.json",
        )
        store.insert_sweep(SweepRecord(f"movie-sweep-huge{i}", spec, [], SweepState.KILLED, time.time()))
    store.close()
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        # A new one of that size is refused, naming the limit.
        spec = pruned_spec("fake.json")
        spec.search_space["threads"].values.values.extend([1] * 300)
        with pytest.raises(grpc.RpcError) as err:
            trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "spec.search_space['threads'].values holds 306 values; the limit is 256" in err.value.details()
        for limit in (0, 1, 1000):
            reply = trainer.stub.ListSweeps(S.ListSweepsRequest(limit=limit), timeout=30)
            assert reply.ByteSize() < 4 * 1024 * 1024
            assert reply.sweeps and "this response shows the first 64 values" in reply.sweeps[0].reason
        got = trainer.stub.GetSweep(S.GetSweepRequest(sweep_id="movie-sweep-huge1"), timeout=30).sweep
        assert len(got.spec.search_space["epochs"].values.values) == 64
        with pytest.raises(grpc.RpcError) as err:
            trainer.stub.ListSweeps(S.ListSweepsRequest(page_token="x"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.value.details()


BAD = [
    (dict(pruner=S.Pruner(kind=S.PRUNER_KIND_HYPERBAND, reduction_factor=1)), "spec.pruner.reduction_factor"),
    (dict(pruner=S.Pruner(kind=S.PRUNER_KIND_MEDIAN, warmup_epochs=500)), "spec.pruner.warmup_epochs"),
    (dict(pruner=S.Pruner(kind=9)), "spec.pruner.kind has an unknown value 9"),
    (dict(algorithm=9), "spec.algorithm has an unknown value 9; use TPE, GRID or RANDOM"),
    (dict(startup_trials=5000), "spec.startup_trials must be 0..1000"),
]


def test_bad_pruners_and_samplers_are_invalid_argument_naming_the_field(tmp_path):
    config = make_config(tmp_path, gate=GATE)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        for fields, words in BAD:
            with pytest.raises(grpc.RpcError) as err:
                trainer.stub.StartSweep(
                    S.StartSweepRequest(spec=pruned_spec("fake.json", **fields)), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in err.value.details(), err.value.details()
        assert trainer.stub.ListSweeps(S.ListSweepsRequest(), timeout=10).sweeps == []


def test_a_tpe_sweep_with_pruning_survives_a_sigkilled_trainer(tmp_path):
    """TPE draws each trial as a slot frees; the Trainer is SIGKILLed with
    trials ended and one running, and a new one on the same state directory
    re-attaches the running trial, draws the rest and prunes as before."""
    make_config(tmp_path)  # writes the default fake corpus
    write_spec(tmp_path / "data", "bad.json", epoch_s=0.4, bad_above_threads=3)
    spec = pruned_spec(
        "bad.json",
        algorithm=S.SEARCH_ALGORITHM_TPE,
        seed=3,
        search_space={"threads": S.SearchSpace(range=S.Range(min=1, max=8))},
        startup_trials=2,
    )
    first = FakeTrainer(tmp_path, "first", gate=OPEN, stop_jobs_on_exit=False)
    try:
        sweep_id = first.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10).sweep.sweep_id
        mid = wait_sweep(
            first.stub,
            sweep_id,
            until=lambda s: (
                sum(t.trial_state in (S.TRIAL_STATE_COMPLETE, S.TRIAL_STATE_PRUNED) for t in s.trials) >= 2
                and any(t.trial_state == S.TRIAL_STATE_RUNNING for t in s.trials)
            ),
        )
        assert mid.state == S.SWEEP_STATE_RUNNING and len(mid.trials) < 6  # TPE draws as it goes
        running = [t.job_id for t in mid.trials if t.trial_state == S.TRIAL_STATE_RUNNING]
    finally:
        first.sigkill()
    second = FakeTrainer(tmp_path, "second", gate=OPEN)
    try:
        done = wait_sweep(second.stub, sweep_id)
        pruned = check_pruned_and_kept(second.stub, done, tmp_path / "state")
        assert pruned
        # The trial that ran through the SIGKILL was re-attached, not started again.
        log = "\n".join(second.status(running[0], 200).log_tail)
        assert "re-attached" in log or "while the Trainer was down" in second.status(running[0]).job.reason
        assert len({t.hyperparameters.threads for t in done.trials}) == 6  # no configuration twice
    finally:
        second.stop()


def test_list_sweeps_pages_by_size_without_loss_or_repeat(tmp_path, monkeypatch):
    from trainer import sweep_pages

    config = make_config(tmp_path, gate=GATE)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        started = []
        for _ in range(5):
            spec = pruned_spec("fake.json", trial_budget=1, pruner=None)
            spec.search_space["threads"].values.ClearField("values")
            spec.search_space["threads"].values.values.append(1)
            sweep = trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10).sweep
            trainer.stub.KillSweep(S.KillSweepRequest(sweep_id=sweep.sweep_id), timeout=10)
            started.append(sweep.sweep_id)
        # The sweeps differ a little in size (their reasons): pages fit the largest two.
        one = max(s.ByteSize() for s in trainer.stub.ListSweeps(S.ListSweepsRequest(), timeout=10).sweeps)
        monkeypatch.setattr(
            sweep_pages, "MAX_LIST_BYTES", 2 * (one + 8) + 10
        )  # two sweeps a page (8: framing)
        seen, token, pages = [], "", 0
        while True:
            reply = trainer.stub.ListSweeps(S.ListSweepsRequest(page_token=token), timeout=10)
            seen += [s.sweep_id for s in reply.sweeps]
            pages += 1
            if not reply.next_page_token:
                break
            token = reply.next_page_token
        assert seen == started[::-1] and pages == 3  # newest first, each once
