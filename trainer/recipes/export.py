"""Export a trained model as a TensorFlow Serving version, atomically.

A version is written into ``<model_root>/<model>/.tmp-<version>-<pid>/`` (TF
Serving ignores non-numeric directories) and then renamed to
``<model_root>/<model>/<version>/``: a server polling the model root sees a
whole version or none. On any failure the temporary directory is removed.

Validation before push uses the same staging directory: the staged version
is scored, the served one (``predict_version``) on the same documents, and the
staged one is then promoted (renamed to its number) or rejected (renamed to
``<model>/rejected/<version>/``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

from modelspec import labels as label_columns
from modelspec.features import FeaturePipeline
from modelspec.names import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME
from modelspec.versions import versions

TMP_PREFIX = ".tmp-"
# Versions that failed validation before push, kept for inspection.
REJECTED_DIR = "rejected"
REJECTION_FILE = "validation.json"


def next_version(model_dir: str | pathlib.Path, now: float | None = None) -> int:
    """A timestamp (seconds), bumped above every existing version."""
    stamp = int(time.time() if now is None else now)
    published = versions(model_dir)
    return max(stamp, published[-1] + 1) if published else stamp


def remove_stale_temp_dirs(model_dir: pathlib.Path) -> None:
    """Remove temp dirs left by exports whose process died (e.g. SIGKILL)."""
    for p in model_dir.glob(TMP_PREFIX + "*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_saved_model(model, path: str | pathlib.Path, maxlen: int) -> None:
    """A SavedModel whose ``serving_default`` takes int32 ``input`` [batch, maxlen]
    and returns float32 ``probability`` [batch, L], L = 1 for a single-label
    model (not Keras' generated names)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    @tf.function(input_signature=[tf.TensorSpec([None, maxlen], tf.int32, name=INPUT_NAME)])
    def serve(input):  # noqa: A002 - the argument name is the signature's input key
        return {OUTPUT_NAME: tf.cast(model(input, training=False), tf.float32)}

    archive.add_endpoint(name=SIGNATURE_NAME, fn=serve)
    archive.write_out(str(path), verbose=False)


WARMUP_FILE = pathlib.Path("assets.extra") / "tf_serving_warmup_requests"
# Batch sizes of the warm-up requests: a lone call and the batches coalescing
# and the model server's batching send, so each shape is traced once.
WARMUP_BATCH_SIZES = (1, 4, 16, 64)


def write_warmup_requests(version_dir: str | pathlib.Path, model_name: str, pipeline: FeaturePipeline) -> int:
    """Write ``assets.extra/tf_serving_warmup_requests`` in TF Serving's own
    format: a TFRecord of ``tensorflow.serving.PredictionLog`` (predict_log),
    replayed by TF Serving and labeler-modelserver before the version is
    served. The rows are documents of the model's own vocabulary. Returns the
    number of records."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    words = pipeline.vocabulary or ["<unk>"]
    path = pathlib.Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in WARMUP_BATCH_SIZES:
            documents = [[words[(i * 7 + j) % len(words)] for j in range(6)] for i in range(batch)]
            log_entry = prediction_log_pb2.PredictionLog()
            request = log_entry.predict_log.request
            request.model_spec.name = model_name
            request.model_spec.signature_name = SIGNATURE_NAME
            request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(pipeline.transform(documents)))
            writer.write(log_entry.SerializeToString())
    return len(WARMUP_BATCH_SIZES)


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_version(
    model,
    pipeline: FeaturePipeline,
    model_root: str | pathlib.Path,
    model_name: str,
    label: str,
    version: int | None = None,
    labels: list[str] | None = None,
) -> tuple[int, pathlib.Path]:
    """Write ``model`` and its feature artifacts as a new version; returns
    ``(version, version_dir)``. The version is strictly greater than any
    existing one of this model. ``labels``: a bundle's labels in output column
    order, written beside the features (modelspec.labels)."""
    model_dir = pathlib.Path(model_root) / model_name
    version, tmp = stage_version(model, pipeline, model_dir, model_name, label, version, labels=labels)
    try:
        return _publish(tmp, model_dir, version)
    finally:
        # After a successful publish tmp no longer exists; otherwise clean up.
        shutil.rmtree(tmp, ignore_errors=True)


def stage_version(
    model,
    pipeline: FeaturePipeline,
    model_dir: pathlib.Path,
    model_name: str,
    label: str,
    version: int | None = None,
    labels: list[str] | None = None,
) -> tuple[int, pathlib.Path]:
    """Write a whole version into a staging directory the model server
    ignores (``.tmp-<version>-<pid>``); returns ``(version, staging_dir)``.
    The caller promotes it (``promote``), rejects it, or removes it.
    ``labels``: a bundle's labels in output column order (modelspec.labels)."""
    extra = label_columns.bundle_metadata(labels) if labels else {}
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(model_dir)
    version = next_version(model_dir) if version is None else version
    tmp = model_dir / f"{TMP_PREFIX}{version}-{os.getpid()}"
    try:
        write_saved_model(model, tmp, pipeline.settings.maxlen)
        pipeline.save(
            tmp,
            label=label,
            model=model_name,
            signature_name=SIGNATURE_NAME,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            **extra,
        )
        write_warmup_requests(tmp, model_name, pipeline)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version, tmp


def promote(staging: pathlib.Path, model_dir: pathlib.Path, version: int) -> tuple[int, pathlib.Path]:
    """Make a staged version visible to serving by one rename; returns the
    version it got (above any published since it was staged) and its directory."""
    return _publish(staging, model_dir, version)


def reject(staging: pathlib.Path, model_dir: pathlib.Path, version: int, record: dict) -> pathlib.Path:
    """Keep a staged version that failed validation in
    ``<model>/rejected/<version>/`` (never numeric at the top level, so no
    model server loads it), with ``validation.json`` saying why."""
    (staging / REJECTION_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=2))
    rejected = model_dir / REJECTED_DIR
    rejected.mkdir(exist_ok=True)
    name, n = str(version), 1
    while True:
        target = rejected / name
        try:
            os.rename(staging, target)
        except OSError:
            if target.exists():
                n += 1
                name = f"{version}-{n}"
                continue
            raise
        _fsync_dir(rejected)
        return target


def served_version(model_dir: pathlib.Path) -> int:
    """The version a model server serves: the latest published (TF Serving's
    default version policy); 0 when there is none."""
    published = versions(model_dir)
    return published[-1] if published else 0


def predict_version(version_dir: pathlib.Path, documents: list[list[str]], batch: int = 1024):
    """Probabilities [n, C] of a published version for ``documents`` (word
    lists): its own feature artifacts, its SavedModel's serving signature.
    C is 1 for a single-label model, a bundle's label count for a bundle."""
    import numpy as np
    import tensorflow as tf

    pipeline, meta = FeaturePipeline.load(version_dir)
    signature = tf.saved_model.load(str(version_dir)).signatures[meta.get("signature_name", SIGNATURE_NAME)]
    input_name, output_name = meta.get("input_name", INPUT_NAME), meta.get("output_name", OUTPUT_NAME)
    columns = label_columns.column_labels(meta)
    out = [np.zeros((0, len(columns) if columns else 1), np.float32)]
    for start in range(0, len(documents), batch):
        x = pipeline.transform(documents[start : start + batch])
        out.append(signature(**{input_name: tf.constant(x)})[output_name].numpy().reshape(len(x), -1))
    return np.concatenate(out)


def _publish(tmp: pathlib.Path, model_dir: pathlib.Path, version: int) -> tuple[int, pathlib.Path]:
    # A concurrent export may have taken this number (or a larger one) since
    # we chose it: move past it rather than replace it.
    while True:
        version = max(version, *(v + 1 for v in versions(model_dir)), 0)
        target = model_dir / str(version)
        try:
            os.rename(tmp, target)
        except OSError:
            if target.exists():
                continue
            raise
        _fsync_dir(model_dir)
        return version, target
