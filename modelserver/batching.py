"""Server-side batching, as TF Serving's ``--enable_batching`` does it: concurrent
Predicts on the same model version and signature are queued, concatenated
along dimension 0, run once, and the outputs split back.

A batch is formed when it reaches ``max_batch_size`` rows, or when its oldest
request has waited ``batch_timeout_micros`` and one of ``num_batch_threads``
is free; with the timeout at 0, requests batch up only while every batch
thread is busy, so an idle server adds no delay. Requests are grouped by the
dtype and trailing shape of every input, so tensors that cannot be
concatenated never share a batch (TF Serving would fail the whole batch, or
pad with ``pad_variable_length_inputs``).

The ``BatchingParameters`` text format is TF Serving's
(session_bundle_config.proto). tensorflow-serving-api does not ship that
module, so the message is built here from a descriptor with the same field
names and types: a file that TF Serving accepts parses the same way, and an
unknown field is a parse error.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import os
import pathlib
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from modelserver.model_config import ConfigFileError
from rpc import errors

log = logging.getLogger(__name__)

# name, number, type ("Int64Value" etc. are google.protobuf wrappers).
_FIELDS = [
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
    ("allowed_batch_sizes", 6, "repeated int64"),
    ("pad_variable_length_inputs", 7, "bool"),
    ("enable_large_batch_splitting", 8, "BoolValue"),
    ("max_execution_batch_size", 9, "Int64Value"),
]
# Accepted so TF Serving's files parse, but they only tune padding or splitting.
_IGNORED = (
    "thread_pool_name",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
    "max_execution_batch_size",
)


def _message_class():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="modelserver/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    for name, number, kind in _FIELDS:
        field = message.field.add(name=name, number=number, label=F.LABEL_OPTIONAL)
        if kind == "repeated int64":
            field.label, field.type = F.LABEL_REPEATED, F.TYPE_INT64
        elif kind == "bool":
            field.type = F.TYPE_BOOL
        else:
            field.type, field.type_name = F.TYPE_MESSAGE, f".google.protobuf.{kind}"
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


BatchingParameters = _message_class()


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Defaults are TF Serving's when a field is omitted."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    enable_large_batch_splitting: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")


def parse_batching_parameters(text: str, source: str = "<text>") -> BatchingOptions:
    try:
        params = text_format.Parse(text, BatchingParameters())
    except text_format.ParseError as exc:
        raise ConfigFileError(f"Invalid protobuf file: '{source}': {exc}") from None
    values = {}
    for name in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "enable_large_batch_splitting",
    ):
        if params.HasField(name):
            values[name] = getattr(params, name).value
    for name in _IGNORED:
        if _is_set(params, name):
            log.warning("batching parameter %s is accepted but not applied by labeler-modelserver", name)
    try:
        return BatchingOptions(**values)
    except ValueError as exc:
        raise ConfigFileError(f"batching parameters file '{source}': {exc}") from None


def _is_set(params, name: str) -> bool:
    value = getattr(params, name)
    if isinstance(value, bool) or name == "allowed_batch_sizes":
        return bool(value)
    return params.HasField(name)


def read_batching_parameters(path: str | pathlib.Path) -> BatchingOptions:
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"cannot read batching parameters file '{path}': {exc}") from None
    return parse_batching_parameters(text, str(path))


def task_size(inputs: Sequence[np.ndarray]) -> int:
    """Rows of one request: dimension 0, the same for every input."""
    if any(a.ndim == 0 for a in inputs):
        raise errors.InvalidArgument("Batching Run() input tensors must have at least one dimension")
    sizes = {a.shape[0] for a in inputs}
    if len(sizes) > 1:
        raise errors.InvalidArgument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop() if sizes else 0


# Runs one concatenated batch (blocking, on an executor thread).
Execute = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclasses.dataclass(eq=False)
class _Task:
    inputs: list[np.ndarray]
    size: int
    future: asyncio.Future
    enqueued: float


class _Queue:
    def __init__(self, execute: Execute) -> None:
        self.execute = execute
        self.tasks: collections.deque[_Task] = collections.deque()
        self.rows = 0
        self.wakeup = asyncio.Event()
        self.consumer: asyncio.Task | None = None


class Batcher:
    def __init__(self, options: BatchingOptions, executor: concurrent.futures.Executor) -> None:
        self.options = options
        self._executor = executor
        self._queues: dict[Hashable, _Queue] = {}
        self._threads = asyncio.Semaphore(options.num_batch_threads)
        self._running: set[asyncio.Task] = set()
        # Counters for tests and benchmarks: batches run, requests they carried.
        self.batches_run = 0
        self.tasks_run = 0

    async def run(self, key: Hashable, inputs: list[np.ndarray], execute: Execute) -> list[np.ndarray]:
        """Run ``inputs`` in a batch with others of the same ``key``; returns this
        request's rows of every output. ``execute`` must mean the same for every
        request of a key (same version, signature, feeds and fetches)."""
        size = task_size(inputs)
        limit = self.options.max_batch_size
        if size > limit and not self.options.enable_large_batch_splitting:
            raise errors.InvalidArgument(f"Task size {size} is larger than maximum input batch size {limit}")
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(execute)
        if queue.rows + size > self.options.max_enqueued_batches * limit:
            raise errors.Unavailable("The batch scheduling queue to which this task was submitted is full")
        loop = asyncio.get_running_loop()
        task = _Task(inputs, size, loop.create_future(), loop.time())
        queue.tasks.append(task)
        queue.rows += size
        queue.wakeup.set()
        if queue.consumer is None:
            queue.consumer = asyncio.create_task(self._consume(key, queue))
        return await task.future

    async def _consume(self, key: Hashable, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.options.batch_timeout_micros / 1e6
        try:
            while queue.tasks:
                deadline = queue.tasks[0].enqueued + timeout
                while queue.tasks and queue.rows < self.options.max_batch_size and loop.time() < deadline:
                    queue.wakeup.clear()
                    try:
                        # asyncio.timeout, not wait_for: wait_for can swallow a
                        # cancel that lands as the wait ends (Python 3.11).
                        async with asyncio.timeout(deadline - loop.time()):
                            await queue.wakeup.wait()
                    except TimeoutError:
                        break
                await self._threads.acquire()
                batch = self._take(queue)
                if not batch:
                    self._threads.release()
                    continue
                running = asyncio.create_task(self._execute(queue.execute, batch))
                self._running.add(running)
                running.add_done_callback(self._running.discard)
        finally:
            queue.consumer = None
            if not queue.tasks and self._queues.get(key) is queue:
                del self._queues[key]

    def _take(self, queue: _Queue) -> list[_Task]:
        batch: list[_Task] = []
        rows = 0
        while queue.tasks:
            task = queue.tasks[0]
            if not task.future.done() and batch and rows + task.size > self.options.max_batch_size:
                break
            queue.tasks.popleft()
            queue.rows -= task.size
            if not task.future.done():  # a cancelled caller's rows are dropped
                batch.append(task)
                rows += task.size
        return batch

    async def _execute(self, execute: Execute, batch: list[_Task]) -> None:
        loop = asyncio.get_running_loop()
        self.batches_run += 1
        self.tasks_run += len(batch)
        try:
            outputs = await loop.run_in_executor(
                self._executor, _run_batch, execute, [t.inputs for t in batch], [t.size for t in batch]
            )
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(exc)
        else:
            for task, result in zip(batch, outputs, strict=True):
                if not task.future.done():
                    task.future.set_result(result)
        finally:
            self._threads.release()


def _run_batch(execute: Execute, inputs: list[list[np.ndarray]], sizes: list[int]) -> list[list[np.ndarray]]:
    merged = (
        inputs[0] if len(inputs) == 1 else [np.concatenate(column) for column in zip(*inputs, strict=True)]
    )
    outputs = execute(merged)
    total = sum(sizes)
    for output in outputs:
        if output.ndim == 0 or output.shape[0] != total:
            raise errors.FailedPrecondition(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension "
                "sizes of the input tensors"
            )
    if len(inputs) == 1:
        return [outputs]
    bounds = np.cumsum(sizes)[:-1]
    per_output = [np.split(output, bounds) for output in outputs]
    return [list(parts) for parts in zip(*per_output, strict=True)]
