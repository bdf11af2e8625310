"""Export a trained model as a TensorFlow Serving version, atomically.

A version is written into ``<model_root>/<model>/.tmp-<version>-<pid>/`` (TF
Serving ignores non-numeric directories) and then renamed to
``<model_root>/<model>/<version>/``: a server polling the model root sees a
whole version or none. On any failure the temporary directory is removed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time

from modelspec import labels as label_columns
from modelspec.features import FeaturePipeline
from modelspec.names import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME
from modelspec.versions import versions

TMP_PREFIX = ".tmp-"


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
    extra = label_columns.bundle_metadata(labels) if labels else {}
    model_dir = pathlib.Path(model_root) / model_name
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
        return _publish(tmp, model_dir, version)
    finally:
        # After a successful publish tmp no longer exists; otherwise clean up.
        shutil.rmtree(tmp, ignore_errors=True)


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
