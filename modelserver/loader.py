"""One SavedModel version, loaded the way TF Serving loads it: a TF1 graph in its
own ``tf.Graph`` and ``Session``, signatures read from the MetaGraphDef, and
tensors fed by name.

Why not ``tf.saved_model.load`` + concrete functions: it fails on one of TF
Serving's own test models, and Python's feeding paths check the signature's
static shape, which TF Serving never does (half_plus_two fed ``x`` of shape
[1] instead of [1, 1] answers y = [3.0]). ``Session._call_tf_sessionrun``
hands numpy arrays straight to ``TF_SessionRun``: no shape check, no dtype
cast, so a wrong dtype fails with TensorFlow's own message, as in TF Serving.
It releases the GIL while TensorFlow runs, so concurrent requests run in
parallel on executor threads.

Each version owns its session. ``acquire``/``release`` count in-flight calls;
``retire`` (after the manager has swapped the version out) closes the session
once the last call has finished.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.saved_model import loader_impl

from rpc import errors

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class TensorBinding:
    """A signature alias bound to a graph tensor (``tf_output`` is None when the
    signature names something that is not a tensor of this graph)."""

    alias: str
    name: str
    dtype: int
    tf_output: object | None


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    inputs: Mapping[str, TensorBinding]
    outputs: Mapping[str, TensorBinding]
    defaults: Mapping[str, object]  # alias -> TensorProto fed when the request omits it


def session_config(intra_op_threads: int = 0, inter_op_threads: int = 0) -> tf.compat.v1.ConfigProto:
    """0 lets TensorFlow decide (one thread per core)."""
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads,
        inter_op_parallelism_threads=inter_op_threads,
        allow_soft_placement=True,
    )


class LoadedVersion:
    """A servable: one version of one model, ready to run."""

    def __init__(
        self,
        name: str,
        version: int,
        path: pathlib.Path,
        session: tf.compat.v1.Session,
        meta_graph: meta_graph_pb2.MetaGraphDef,
        signatures: Mapping[str, Signature],
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.meta_graph = meta_graph
        self.signatures = dict(signatures)
        self._session = session
        self._lock = threading.Lock()
        self._in_flight = 0
        self._retired = False
        self._closed = False
        self.warmup_requests = 0  # warm-up requests replayed before it was served

    def __repr__(self) -> str:
        return f"LoadedVersion({self.name!r}, {self.version})"

    def run(
        self, feeds: Sequence[tuple[TensorBinding, np.ndarray]], fetches: Sequence[TensorBinding]
    ) -> list[np.ndarray]:
        """Run the graph: feed tensors by name, fetch tensors by name (blocking;
        call from an executor thread while holding a reference)."""
        for binding in [*(b for b, _ in feeds), *fetches]:
            if binding.tf_output is None:
                raise errors.error(
                    "FAILED_PRECONDITION",
                    f"signature tensor {binding.alias} ({binding.name}) is not a tensor of model "
                    f"{self.name} version {self.version}",
                )
        feed_dict = {binding.tf_output: array for binding, array in feeds}
        try:
            return self._session._call_tf_sessionrun(
                None, feed_dict, [b.tf_output for b in fetches], [], None
            )
        except tf.errors.OpError as exc:
            raise errors.error(exc.error_code, exc.message) from None

    # -- reference counting -------------------------------------------------

    def acquire(self) -> bool:
        """Take a reference for one call; False once retired (look again)."""
        with self._lock:
            if self._retired:
                return False
            self._in_flight += 1
            return True

    def retain(self) -> bool:
        """Take one more reference while the session is still open, retired or
        not (a batch whose callers hold references); False once closed."""
        with self._lock:
            if self._closed:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            close = self._should_close()
        if close:
            self._close_session()

    def retire(self) -> None:
        """No new calls; close the session when the last in-flight one ends."""
        with self._lock:
            self._retired = True
            close = self._should_close()
        if close:
            self._close_session()

    @property
    def closed(self) -> bool:
        return self._closed

    def _should_close(self) -> bool:
        # Called under the lock: deciding and marking closed is one step, so
        # no retain() can slip in between.
        if self._retired and self._in_flight == 0 and not self._closed:
            self._closed = True
            return True
        return False

    def _close_session(self) -> None:
        self._session.close()
        log.info("unloaded %s version %d", self.name, self.version)


def _bind(graph: tf.Graph, alias: str, info: meta_graph_pb2.TensorInfo) -> TensorBinding:
    try:
        tf_output = graph.get_tensor_by_name(info.name)._as_tf_output()
    except (KeyError, ValueError):
        # e.g. __saved_model_init_op names an operation, not a tensor.
        tf_output = None
    return TensorBinding(alias=alias, name=info.name, dtype=info.dtype, tf_output=tf_output)


def read_signatures(graph: tf.Graph, meta_graph: meta_graph_pb2.MetaGraphDef) -> dict[str, Signature]:
    return {
        key: Signature(
            name=key,
            inputs={alias: _bind(graph, alias, info) for alias, info in sig.inputs.items()},
            outputs={alias: _bind(graph, alias, info) for alias, info in sig.outputs.items()},
            defaults=dict(sig.defaults),
        )
        for key, sig in meta_graph.signature_def.items()
    }


def load_version(
    name: str,
    version: int,
    path: pathlib.Path,
    config: tf.compat.v1.ConfigProto | None = None,
) -> LoadedVersion:
    """Load ``path`` (a SavedModel with the ``serve`` tag) in its own graph and
    session; blocking. Raises a ServiceError that says what failed."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config or session_config())
    try:
        with graph.as_default():
            meta_graph = loader_impl.SavedModelLoader(str(path)).load(session, [SERVE_TAG])
        # Register every op with the session now: runs feed tensors directly
        # and never extend the graph themselves.
        session._extend_graph()
        signatures = read_signatures(graph, meta_graph)
    except BaseException as exc:
        session.close()
        if isinstance(exc, tf.errors.OpError):
            raise errors.error(exc.error_code, f"loading {path}: {exc.message}") from None
        if isinstance(exc, OSError | ValueError | RuntimeError):
            raise errors.error("FAILED_PRECONDITION", f"loading {path}: {exc}") from None
        raise
    graph.finalize()  # nothing may add ops to a serving graph
    log.info("loaded %s version %d from %s (%d signatures)", name, version, path, len(signatures))
    loaded = LoadedVersion(name, version, path, session, meta_graph, signatures)
    try:
        replay_warmup(loaded)
    except BaseException:
        loaded.retire()  # closes the session: nothing holds it yet
        raise
    return loaded


# -- warm-up (TF Serving's SavedModel warm-up) ----------------------------------

WARMUP_FILE = pathlib.Path("assets.extra") / "tf_serving_warmup_requests"
# TF Serving refuses a warm-up file with more records than this.
MAX_WARMUP_RECORDS = 1000


def replay_warmup(version: LoadedVersion) -> int:
    """Replay ``<version>/assets.extra/tf_serving_warmup_requests`` as TF
    Serving does, before the version is reported AVAILABLE: a TFRecord of
    ``tensorflow.serving.PredictionLog``, each predict_log's request run
    once, so the first real request does not pay for graph initialisation.
    A failing record fails the load (as in TF Serving); records of other
    kinds (classify, regress, ...) are skipped, since this server answers
    Predict only. Returns the number of requests replayed."""
    path = version.path / WARMUP_FILE
    if not path.is_file():
        return 0
    from tensorflow.python.lib.io import tf_record
    from tensorflow_serving.apis import prediction_log_pb2

    started = time.perf_counter()
    replayed = skipped = 0
    try:
        for count, record in enumerate(tf_record.tf_record_iterator(str(path)), start=1):
            if count > MAX_WARMUP_RECORDS:
                raise errors.error(
                    "INVALID_ARGUMENT",
                    f"{path}: number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) allowed",
                )
            log_entry = prediction_log_pb2.PredictionLog.FromString(record)
            if log_entry.WhichOneof("log_type") != "predict_log":
                skipped += 1
                continue
            _replay_predict(version, log_entry.predict_log.request, count)
            replayed += 1
    except tf.errors.OpError as exc:  # a corrupt record (bad length or CRC)
        raise errors.error(exc.error_code, f"reading warm-up file {path}: {exc.message}") from None
    except DecodeError as exc:
        raise errors.error(
            "INVALID_ARGUMENT", f"warm-up file {path}: a record is not a PredictionLog: {exc}"
        ) from None
    log.info(
        "%s version %d: replayed %d warm-up request(s)%s in %.0f ms",
        version.name,
        version.version,
        replayed,
        f" (skipped {skipped} not Predict)" if skipped else "",
        (time.perf_counter() - started) * 1000,
    )
    version.warmup_requests = replayed
    return replayed


def _replay_predict(version: LoadedVersion, request, record: int) -> None:
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = version.signatures.get(name)
    where = f"warm-up record {record} of {version.name} version {version.version}"
    if signature is None:
        raise errors.error("FAILED_PRECONDITION", f'{where}: serving signature key "{name}" not found')
    feeds = []
    for alias, tensor in request.inputs.items():
        binding = signature.inputs.get(alias)
        if binding is None:
            raise errors.error("INVALID_ARGUMENT", f"{where}: input {alias!r} is not in signature {name!r}")
        try:
            feeds.append((binding, tf.make_ndarray(tensor)))
        except (TypeError, ValueError) as exc:
            raise errors.error("INVALID_ARGUMENT", f"{where}: input {alias!r}: {exc}") from None
    wanted = list(request.output_filter) or sorted(signature.outputs)
    fetches = []
    for alias in wanted:
        if alias not in signature.outputs:
            raise errors.error("INVALID_ARGUMENT", f"{where}: output {alias!r} is not in signature {name!r}")
        fetches.append(signature.outputs[alias])
    try:
        version.run(feeds, fetches)
    except errors.ServiceError as exc:
        raise errors.error(exc.code, f"{where} failed: {exc}") from None
