"""Resident memory of a real ``labeler serve`` process with the four sample
models loaded and answering, beside what the same process would weigh had it
imported TensorFlow, and beside the model server.

    .venv/bin/python -m bench.labeler_memory [--quick] [--model-root var/models]

Without --model-root it trains the four sample models (the real recipe, as
subprocesses) into a temporary root first; --quick trains them tiny. Then it
starts labeler-modelserver and ``labeler serve`` as subprocesses, waits until
every label is AVAILABLE, sends Classify and ClassifyBatch traffic, and reads
each process's RSS (and USS) with psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import psutil

from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from modelspec.features import FeaturePipeline
from modelspec.versions import version_dirs

SAMPLE_MODELS = {"movie": "影视", "beauty": "美妆", "star": "明星", "fashion": "时尚"}
EXAMPLE = ["霸王别姬", "是一部", "非常", "值得", "看的", "电影"]
MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_models(root: pathlib.Path, quick: bool) -> tuple[pathlib.Path, pathlib.Path]:
    """Generate a corpus and train the four models with the real recipe."""
    corpus_dir = root / "corpus"
    docs = 150 if quick else 2000
    subprocess.run(
        [sys.executable, "-m", "trainer.corpus", "--out", str(corpus_dir), "--docs-per-label", str(docs)],
        check=True,
    )
    models = root / "models"
    for model, label in SAMPLE_MODELS.items():
        argv = [
            sys.executable,
            "-m",
            "trainer.recipes.fasttext",
            "--model",
            model,
            "--label",
            label,
            "--corpus",
            str(corpus_dir / "train.jsonl"),
            "--model-root",
            str(models),
            "--epochs",
            "2" if quick else "5",
            "--threads",
            "2",
        ]
        print(f"training {model} ...", file=sys.stderr, flush=True)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return models, corpus_dir / "test.jsonl"


def _rss(pid: int) -> tuple[float, float]:
    info = psutil.Process(pid).memory_full_info()
    return info.rss / MIB, info.uss / MIB


def tensorflow_import_rss() -> float:
    """RSS of a Python process after ``import tensorflow`` (what the Labeler avoids)."""
    code = "import tensorflow, psutil; print(psutil.Process().memory_info().rss)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.split()[-1]) / MIB


def measure(model_root: pathlib.Path, documents: list[list[str]], requests: int, work: pathlib.Path) -> dict:
    ms_port, labeler_port = _free_port(), _free_port()
    ms_config = work / "models.config"
    ms_config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{m}" base_path: "{model_root / m}" model_platform: "tensorflow" }}\n'
            for m in SAMPLE_MODELS
        )
        + "}\n"
    )
    labeler_config = work / "labeler.textproto"
    labeler_config.write_text(
        f'default_target: "127.0.0.1:{ms_port}"\nmodel_root: "{model_root}"\n'
        + "".join(f'labels {{ label: "{label}" model: "{m}" }}\n' for m, label in SAMPLE_MODELS.items()),
        encoding="utf-8",
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    logs = open(work / "servers.log", "wb")  # noqa: SIM115 - closed below
    modelserver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelserver.cli",
            f"--port={ms_port}",
            f"--model_config_file={ms_config}",
            "--tensorflow_intra_op_parallelism=1",
            "--tensorflow_inter_op_parallelism=1",
        ],
        stdout=logs,
        stderr=logs,
        env=env,
    )
    labeler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labeler.cli",
            "serve",
            "--config",
            str(labeler_config),
            "--port",
            str(labeler_port),
        ],
        stdout=logs,
        stderr=logs,
        env=env,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{labeler_port}") as channel:
            stub = labeler_pb2_grpc.LabelerStub(channel)
            deadline = time.monotonic() + 300
            while True:
                try:
                    infos = stub.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
                    if all(i.state == labeler_pb2.LABEL_STATE_AVAILABLE for i in infos):
                        break
                except grpc.RpcError:
                    pass
                if (
                    time.monotonic() > deadline
                    or labeler.poll() is not None
                    or modelserver.poll() is not None
                ):
                    raise RuntimeError(f"servers did not become ready; see {work / 'servers.log'}")
                time.sleep(0.2)
            loaded = _rss(labeler.pid)
            reply = stub.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=10)
            assert "影视" in {s.label for s in reply.labels}, reply
            for i in range(requests):
                stub.Classify(labeler_pb2.ClassifyRequest(words=documents[i % len(documents)]), timeout=10)
            batch = [labeler_pb2.Document(words=d) for d in documents[:256]]
            for _ in range(max(1, requests // 100)):
                stub.ClassifyBatch(labeler_pb2.ClassifyBatchRequest(documents=batch), timeout=30)
            served = _rss(labeler.pid)
            model_server = _rss(modelserver.pid)
            vocab = {i.model: i.model_version for i in infos}
    finally:
        for proc in (labeler, modelserver):
            proc.terminate()
        for proc in (labeler, modelserver):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
    return {
        "labeler_rss_loaded_mib": loaded[0],
        "labeler_rss_after_traffic_mib": served[0],
        "labeler_uss_after_traffic_mib": served[1],
        "modelserver_rss_mib": model_server[0],
        "versions": vocab,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.labeler_memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny models and little traffic")
    parser.add_argument("--model-root", help="use these trained models instead of training new ones")
    parser.add_argument(
        "--test-corpus", help="JSONL documents for traffic (default: the generated test split)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="labeler-memory-") as tmp:
        work = pathlib.Path(tmp)
        if args.model_root:
            model_root, test_corpus = pathlib.Path(args.model_root).resolve(), args.test_corpus
        else:
            model_root, test_corpus = train_models(work, args.quick)
        documents = [EXAMPLE]
        if test_corpus:
            documents = [
                json.loads(line)["words"]
                for line in pathlib.Path(test_corpus).read_text(encoding="utf-8").splitlines()
            ]
        sizes = {}
        for m in SAMPLE_MODELS:
            version_dir = list((version_dirs(model_root / m) or {}).values())[-1]
            pipeline, _ = FeaturePipeline.load(version_dir)
            sizes[m] = {"words": len(pipeline.vocabulary), "ngrams": len(pipeline.ngram_table)}
        result = measure(model_root, documents, 200 if args.quick else 2000, work)
    result["tensorflow_import_rss_mib"] = tensorflow_import_rss()
    result["feature_tables"] = sizes
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print()
    print("| process | RSS (MiB) |")
    print("| --- | ---: |")
    print(f"| `labeler serve`, four models loaded | {result['labeler_rss_loaded_mib']:.0f} |")
    print(
        f"| `labeler serve`, after traffic | {result['labeler_rss_after_traffic_mib']:.0f} (USS {result['labeler_uss_after_traffic_mib']:.0f}) |"
    )
    print(f"| a Python process after `import tensorflow` | {result['tensorflow_import_rss_mib']:.0f} |")
    print(f"| labeler-modelserver, four models | {result['modelserver_rss_mib']:.0f} |")
    ratio = result["tensorflow_import_rss_mib"] / result["labeler_rss_after_traffic_mib"]
    print(f"\n`import tensorflow` alone weighs {ratio:.1f}x the whole serving Labeler.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
