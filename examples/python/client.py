"""Call the text-labeler services from Python: the Labeler's ListLabels and
Classify, and (with --trainer) the Trainer's List and Status.

    python examples/python/client.py --labeler localhost:50051 --trainer localhost:50052 \
        霸王别姬 是一部 非常 值得 看的 电影

Uses the stubs checked in under labeler/v1 and trainer/v1 (install the project,
or run from the repository root). Exit status: 0 on success, 2 on a usage
error, 3 when an RPC fails; a failed RPC prints "error: CODE_NAME: message" on
stderr.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import grpc

try:
    from labeler import retry_policy
    from labeler.v1 import labeler_pb2, labeler_pb2_grpc
    from trainer.v1 import trainer_pb2, trainer_pb2_grpc
except ImportError:  # run from a checkout without installing the project
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
    from labeler import retry_policy
    from labeler.v1 import labeler_pb2, labeler_pb2_grpc
    from trainer.v1 import trainer_pb2, trainer_pb2_grpc

EXIT_USAGE = 2
EXIT_RPC_ERROR = 3


def open_channel(target: str, ca_file: str) -> grpc.Channel:
    # docs/clients.md's retry policy: retries a refused call after the server's
    # grpc-retry-pushback-ms; retryThrottling stops retries while most calls fail.
    options = retry_policy.channel_options()
    if not ca_file:
        return grpc.insecure_channel(target, options=options)
    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(target, credentials, options=options)


def call_metadata() -> tuple[tuple[str, str], ...]:
    token = os.environ.get("TEXT_LABELER_TOKEN", "")
    return (("authorization", f"Bearer {token}"),) if token else ()


def call_labeler(channel: grpc.Channel, words: list[str], timeout: float) -> None:
    labeler = labeler_pb2_grpc.LabelerStub(channel)
    labels = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=timeout, metadata=call_metadata())
    for info in labels.labels:
        state = labeler_pb2.LabelState.Name(info.state).removeprefix("LABEL_STATE_")
        print(f"label {info.label} model={info.model} version={info.model_version} state={state}")
    # The words go to the server as given, even none: the server validates them.
    result = labeler.Classify(labeler_pb2.ClassifyRequest(words=words), timeout=timeout, metadata=call_metadata())
    for score in result.labels:
        print(f"classify {score.label} {score.probability:.4f} model={score.model} version={score.model_version}")
    for failure in result.failures:
        print(f"failure {failure.label} {failure.code_name}: {failure.message}")


def call_trainer(channel: grpc.Channel, timeout: float) -> None:
    trainer = trainer_pb2_grpc.TrainerStub(channel)
    jobs = trainer.List(trainer_pb2.ListRequest(limit=5), timeout=timeout, metadata=call_metadata()).jobs
    print(f"jobs {len(jobs)}")
    for job in jobs:
        print(f"job {job.job_id} model={job.model} state={job_state(job)}")
    if not jobs:
        return
    reply = trainer.Status(
        trainer_pb2.StatusRequest(job_id=jobs[0].job_id, log_lines=5), timeout=timeout, metadata=call_metadata()
    )
    job = reply.job
    print(
        f"status {job.job_id} state={job_state(job)} epoch={job.progress.epoch}/{job.progress.epochs} "
        f'log_lines={len(reply.log_tail)} reason="{job.reason}"'
    )


def job_state(job: trainer_pb2.Job) -> str:
    return trainer_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labeler", default="localhost:50051", help="the Labeler's host:port")
    parser.add_argument("--trainer", default="", help="the Trainer's host:port; empty skips the Trainer calls")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, in seconds")
    parser.add_argument("--ca", default="", help="PEM CA certificate: use TLS and trust this CA")
    parser.add_argument("words", nargs="*", help="the document's words, already segmented")
    args = parser.parse_args(argv)
    try:
        with open_channel(args.labeler, args.ca) as channel:
            call_labeler(channel, args.words, args.timeout)
        if args.trainer:
            with open_channel(args.trainer, args.ca) as channel:
                call_trainer(channel, args.timeout)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return EXIT_RPC_ERROR
    except OSError as err:
        print(f"error: reading the CA file: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
