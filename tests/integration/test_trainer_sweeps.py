"""Sweeps through the real Trainer: trials are ordinary gated jobs (run with
--no-push), at most max_parallel_trials at once; the best trial's
configuration is then trained with validation before push, and only its
model reaches the model directory. Killing a sweep kills its trials; a
Trainer restart mid-sweep resumes it. Uses the fake recipe, whose held-out
f1 peaks at a given epoch count."""

from __future__ import annotations

import time

import grpc
import pytest

from tests.support.trainer_support import (
    ScriptedLoad,
    alive,
    make_config,
    pids_from_log,
    running_trainer,
    write_spec,
)
from trainer.gate import GatePolicy
from trainer.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(240)
S = trainer_pb2
# The real gate's decisions on scripted load (the shared machine's own load
# must not decide these tests): admits while below normal.
# settle_s=0: the scripted reading is the whole load (a just-admitted job is not
# expected to add its thread budget on top), so jobs run side by side below danger.
GATE = GatePolicy(
    cpu_normal=55, cpu_danger=95, memory_normal=55, memory_danger=95, warmup_s=0, window_s=0.2, settle_s=0
)
SWEEP_ENDED = (S.SWEEP_STATE_SUCCEEDED, S.SWEEP_STATE_FAILED, S.SWEEP_STATE_KILLED)


def sweep_spec(corpus: str, budget: int = 6, parallel: int = 2, **fields) -> S.SweepSpec:
    """A grid over epochs 1..6 (f1 peaks at 4 epochs in the corpus used)."""
    values = dict(
        model="movie",
        label="影视",
        corpus=corpus,
        search_space={"epochs": S.SearchSpace(range=S.Range(min=1, max=6, grid_points=6))},
        algorithm=S.SEARCH_ALGORITHM_GRID,
        trial_budget=budget,
        max_parallel_trials=parallel,
        metric="f1",
        direction=S.METRIC_DIRECTION_MAXIMIZE,
    )
    values.update(fields)
    return S.SweepSpec(**values)


def get(trainer, sweep_id: str) -> S.Sweep:
    return trainer.stub.GetSweep(S.GetSweepRequest(sweep_id=sweep_id), timeout=10).sweep


def wait_sweep(trainer, sweep_id: str, states=SWEEP_ENDED, timeout: float = 120.0, watch=None) -> S.Sweep:
    deadline = time.monotonic() + timeout
    while True:
        sweep = get(trainer, sweep_id)
        if watch is not None:
            watch(sweep)
        if sweep.state in states:
            return sweep
        if time.monotonic() > deadline:
            raise AssertionError(f"sweep still {S.SweepState.Name(sweep.state)}: {sweep.reason}")
        time.sleep(0.05)


def versions(config) -> list[str]:
    model_dir = config.model_root / "movie"
    return sorted(p.name for p in model_dir.iterdir() if p.name.isdigit()) if model_dir.is_dir() else []


def test_a_six_trial_sweep_two_at_a_time_pushes_only_the_best(tmp_path):
    config = make_config(tmp_path, gate=GATE)
    corpus = write_spec(config.data_root, "peak4.json", epoch_s=0.3, f1_peak_epochs=4)
    most_running = []

    def watch(sweep):
        most_running.append(sum(t.state == S.JOB_STATE_RUNNING for t in sweep.trials))

    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        started = trainer.stub.StartSweep(S.StartSweepRequest(spec=sweep_spec(corpus)), timeout=10).sweep
        assert started.state == S.SWEEP_STATE_RUNNING and len(started.trials) == 6
        # Optuna's GridSampler draws every point once, in a seeded order.
        assert sorted(t.hyperparameters.epochs for t in started.trials) == [1, 2, 3, 4, 5, 6]
        done = wait_sweep(trainer, started.sweep_id, watch=watch)
        assert done.state == S.SWEEP_STATE_SUCCEEDED, done.reason
        assert max(most_running) == 2  # two trials ran at once, never more
        assert all(t.state == S.JOB_STATE_SUCCEEDED and t.HasField("metric") for t in done.trials)
        by_epochs = sorted(done.trials, key=lambda t: t.hyperparameters.epochs)
        assert [round(t.metric, 3) for t in by_epochs] == [0.6, 0.7, 0.8, 0.9, 0.8, 0.7]
        assert done.best.index == by_epochs[3].index and done.best.hyperparameters.epochs == 4
        assert all(t.trial_state == S.TRIAL_STATE_COMPLETE for t in done.trials)
        final = done.final_job
        assert (
            final.state == S.JOB_STATE_SUCCEEDED and final.hyperparameters.epochs == 4 and not final.no_push
        )
        assert final.sweep_id == started.sweep_id and final.model_version > 0
        assert f"version {final.model_version}" in done.reason
        # Only the final job exported a version; the trials exported nothing.
        assert versions(config) == [str(final.model_version)]
        listed = trainer.stub.List(S.ListRequest(sweep_id=started.sweep_id), timeout=10).jobs
        assert len(listed) == 7 and {j.sweep_id for j in listed} == {started.sweep_id}
        assert sum(j.no_push for j in listed) == 6 and all(j.model_version == 0 for j in listed if j.no_push)
        others = trainer.start("star", "明星")
        assert others.sweep_id == ""
        assert len(trainer.stub.List(S.ListRequest(), timeout=10).jobs) == 8
        sweeps = trainer.stub.ListSweeps(S.ListSweepsRequest(), timeout=10).sweeps
        assert [s.sweep_id for s in sweeps] == [started.sweep_id]
        # A retried StartSweep with the same key returns the same sweep.
        keyed = S.StartSweepRequest(spec=sweep_spec(corpus, budget=1, search_space={}), idempotency_key="k")
        keyed.spec.search_space["epochs"].values.values.append(2)
        one = trainer.stub.StartSweep(keyed, timeout=10).sweep
        assert trainer.stub.StartSweep(keyed, timeout=10).sweep.sweep_id == one.sweep_id


def test_killing_a_sweep_kills_its_trials_and_starts_no_more(tmp_path):
    config = make_config(tmp_path, gate=GATE)
    slow = write_spec(config.data_root, "slow.json", epoch_s=30, grandchildren=True, f1_peak_epochs=4)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        spec = sweep_spec(slow, priority=S.PRIORITY_HIGH)
        sweep = trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10).sweep
        assert sweep.spec.priority == S.PRIORITY_HIGH
        running = wait_sweep(
            trainer,
            sweep.sweep_id,
            states=[S.SWEEP_STATE_RUNNING],
            watch=None,
        )
        deadline = time.monotonic() + 30
        while sum(t.state == S.JOB_STATE_RUNNING for t in running.trials) < 2:
            assert time.monotonic() < deadline, running
            time.sleep(0.05)
            running = get(trainer, sweep.sweep_id)
        pids = []
        for t in running.trials[:2]:
            pids += pids_from_log(trainer.wait_log(t.job_id, "pids ")).values()
        killed = trainer.stub.KillSweep(S.KillSweepRequest(sweep_id=sweep.sweep_id), timeout=60).sweep
        assert killed.state == S.SWEEP_STATE_KILLED and "KillSweep" in killed.reason
        # Like Kill, KillSweep answers at once: running trials are STOPPING, then KILLED.
        assert {t.state for t in killed.trials[:2]} <= {S.JOB_STATE_STOPPING, S.JOB_STATE_KILLED}
        assert [trainer.wait(t.job_id).state for t in killed.trials[:2]] == [S.JOB_STATE_KILLED] * 2
        assert all(t.job_id == "" for t in killed.trials[2:])
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids), "a trial's process tree survived KillSweep"
        time.sleep(1.5)  # the driver had its chance to start more: it must not
        jobs = trainer.stub.List(S.ListRequest(sweep_id=sweep.sweep_id), timeout=10).jobs
        assert len(jobs) == 2 and {j.priority for j in jobs} == {S.PRIORITY_HIGH}  # trials inherit it
        again = trainer.stub.KillSweep(S.KillSweepRequest(sweep_id=sweep.sweep_id), timeout=10).sweep
        assert again.state == S.SWEEP_STATE_KILLED
        assert versions(config) == []


@pytest.mark.parametrize("stop_jobs_on_exit", [False, True], ids=["reattached", "requeued"])
def test_a_restarted_trainer_resumes_the_sweep(tmp_path, stop_jobs_on_exit):
    config = make_config(tmp_path, gate=GATE, stop_jobs_on_exit=stop_jobs_on_exit)
    corpus = write_spec(config.data_root, "peak4.json", epoch_s=0.6, f1_peak_epochs=4)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as first:
        sweep_id = first.stub.StartSweep(
            S.StartSweepRequest(spec=sweep_spec(corpus)), timeout=10
        ).sweep.sweep_id
        deadline = time.monotonic() + 60
        while True:  # mid-sweep: some trials done, two running
            now = get(first, sweep_id)
            done = sum(t.state == S.JOB_STATE_SUCCEEDED for t in now.trials)
            running = sum(t.state == S.JOB_STATE_RUNNING for t in now.trials)
            if done >= 2 and running == 2:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.05)
    resumed_config = make_config(tmp_path, gate=GATE)  # stops its jobs at the end of the test
    with running_trainer(resumed_config, ScriptedLoad(cpu=10, memory=10)) as second:
        done = wait_sweep(second, sweep_id)
        assert done.state == S.SWEEP_STATE_SUCCEEDED, done.reason
        assert done.best.hyperparameters.epochs == 4 and done.final_job.model_version > 0
        assert all(t.state == S.JOB_STATE_SUCCEEDED for t in done.trials)
        jobs = second.stub.List(S.ListRequest(sweep_id=sweep_id), timeout=10).jobs
        assert len(jobs) == 7  # one job per trial and one final: nothing started twice
        assert versions(config) == [str(done.final_job.model_version)]
        if not stop_jobs_on_exit:
            assert any("re-attached" in "\n".join(second.status(t.job_id).log_tail) for t in done.trials)


BAD = [
    (dict(search_space={}), "spec.search_space is empty"),
    (dict(search_space={"epochs": S.SearchSpace(range=S.Range(min=5, max=2))}), "min 5 > max 2"),
    (
        dict(search_space={"epochs": S.SearchSpace(range=S.Range(min=0, max=2, scale=S.SCALE_LOG))}),
        "LOG scale needs min > 0",
    ),
    (dict(search_space={"dropout": S.SearchSpace(values=S.ValueList(values=[1]))}), "unknown hyperparameter"),
    (
        dict(search_space={"epochs": S.SearchSpace(values=S.ValueList(values=[500]))}),
        "500 is not an integer in 1..200",
    ),
    (dict(trial_budget=0), "spec.trial_budget must be 1..100"),
    (dict(trial_budget=101), "spec.trial_budget must be 1..100"),
    (dict(metric="accuracy"), "spec.metric 'accuracy' is not a metric"),
    (dict(direction=S.METRIC_DIRECTION_UNSPECIFIED), "spec.direction must be MAXIMIZE or MINIMIZE"),
    (dict(direction=7), "spec.direction has an unknown value 7"),
    (dict(model="Bad Name"), "model name"),
    (dict(base_hyperparameters=S.Hyperparameters(epochs=2)), "also fixed in spec.base_hyperparameters"),
]


def test_bad_sweeps_are_invalid_argument_naming_the_field(tmp_path):
    config = make_config(tmp_path, gate=GATE)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        for fields, words in BAD:
            spec = sweep_spec("fake.json")
            if "search_space" in fields:
                spec.ClearField("search_space")
                for name, space in fields.pop("search_space").items():
                    spec.search_space[name].CopyFrom(space)
            for name, value in fields.items():
                if isinstance(value, S.Hyperparameters):
                    getattr(spec, name).CopyFrom(value)
                else:
                    setattr(spec, name, value)
            with pytest.raises(grpc.RpcError) as err:
                trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (fields, err.value.details())
            assert words in err.value.details(), (words, err.value.details())
        for call, request in (
            (trainer.stub.GetSweep, S.GetSweepRequest(sweep_id="nope")),
            (trainer.stub.KillSweep, S.KillSweepRequest(sweep_id="nope")),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert trainer.stub.ListSweeps(S.ListSweepsRequest(), timeout=10).sweeps == []


def test_a_sweep_through_the_real_load_sampler(tmp_path):
    """The same sweep on the machine's real readings (the gate's own sampler):
    memory thresholds just above today's use, CPU left open (the shared
    machine's CPU is not this test's to decide)."""
    import psutil

    memory = psutil.virtual_memory().percent
    gate = GatePolicy(
        cpu_normal=101,
        cpu_danger=101,
        memory_normal=min(100.0, memory + 10),
        memory_danger=101,
        warmup_s=0.2,
        window_s=0.5,
    )
    config = make_config(tmp_path, gate=gate, sample_interval_s=0.1)
    corpus = write_spec(config.data_root, "peak4.json", epoch_s=0.2, f1_peak_epochs=4)
    most_running = []
    with running_trainer(config) as trainer:  # the real LoadSampler
        sweep_id = trainer.stub.StartSweep(
            S.StartSweepRequest(spec=sweep_spec(corpus)), timeout=10
        ).sweep.sweep_id
        done = wait_sweep(
            trainer,
            sweep_id,
            watch=lambda s: most_running.append(sum(t.state == S.JOB_STATE_RUNNING for t in s.trials)),
        )
        assert done.state == S.SWEEP_STATE_SUCCEEDED, done.reason
        assert done.best.hyperparameters.epochs == 4 and max(most_running) <= 2
        # Each trial was admitted by the gate on a real memory reading.
        for job in trainer.stub.List(S.ListRequest(sweep_id=sweep_id), timeout=10).jobs:
            assert job.gate.action == S.GATE_ACTION_ADMIT and job.gate.memory_percent > 0, job.gate
        assert versions(config) == [str(done.final_job.model_version)]
