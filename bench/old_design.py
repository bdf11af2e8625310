"""The old design, rebuilt as the baseline (see /work/shared/reference/, 4.2).

Per request and per model it: started a thread; read model_config.json; loaded
the tokenizer with joblib; padded with per-token Python code; read the n-gram
table with ``eval``; added n-grams in Python; sent one Predict (the old system
used ``requests.post`` without a session: a new connection per call, modelled
here as a new gRPC channel per call) and appended the result to a list shared
by the threads. ``pooled=True`` keeps one channel per target instead, so the
transport is not what differs from the new design.

THIS MODULE IS A DELIBERATELY SLOW BASELINE FOR bench/ ONLY. Its ``eval`` of a
file and per-request loading are the old design's flaws being measured; the
files it reads are written by ``write_artifacts`` from our own trained models,
never from a request. Nothing outside bench/ may do this.
"""

from __future__ import annotations

import json
import pathlib
import threading

import grpc
import joblib
import numpy as np

from labeler.model_client import channel_options
from modelspec.features import FeaturePipeline
from tfserving.protos import predict_pb2, prediction_service_pb2_grpc, types_pb2

THRESHOLD = 0.5
TIMEOUT_S = 30.0


def write_artifacts(
    pipelines: dict[str, FeaturePipeline], labels: dict[str, str], target: str, out: pathlib.Path
) -> pathlib.Path:
    """Write each model's tokenizer (joblib), token_indice (a dict's repr) and
    the shared model_config.json the old code read per request; its path."""
    out.mkdir(parents=True, exist_ok=True)
    config = {}
    for model, pipeline in pipelines.items():
        tokenizer, token_indice = out / f"{model}.Tokenizer", out / f"{model}.token_indice"
        # A Keras Tokenizer's state that matters here: its word_index dict.
        joblib.dump({"word_index": pipeline.word_index}, tokenizer)
        token_indice.write_text(repr(pipeline.ngram_table))
        s = pipeline.settings
        # [tokenizer, cutlen, ngram_range, token_indice, maxlen, service]: the old layout,
        # with the model's name on the gRPC target in place of its REST URL.
        config[labels[model]] = [str(tokenizer), s.cutlen, s.ngram_range, str(token_indice), s.maxlen, model]
    path = out / "model_config.json"
    path.write_text(json.dumps(config, ensure_ascii=False))
    return path


def texts_to_sequences(tokenizer: dict, texts: list[list[str]]) -> list[list[int]]:
    """Keras Tokenizer.texts_to_sequences for pre-split texts (lower-cased, unknown words dropped)."""
    index = tokenizer["word_index"]
    out = []
    for words in texts:
        seq = []
        for w in words:
            i = index.get(w.lower())
            if i is not None:
                seq.append(i)
        out.append(seq)
    return out


def padding(sequences: list[list[int]], maxlen: int) -> list[list[int]]:
    """keras pad_sequences defaults, per token: keep the last maxlen, zeros lead."""
    out = []
    for seq in sequences:
        seq = seq[-maxlen:] if len(seq) > maxlen else seq
        row = [0] * (maxlen - len(seq))
        for token in seq:
            row.append(token)
        out.append(row)
    return out


def add_ngram(sequences: list[list[int]], token_indice: dict, ngram_range: int = 2) -> list[list[int]]:
    """The Keras fastText example's add_ngram."""
    new_sequences = []
    for input_list in sequences:
        new_list = input_list[:]
        for ngram_value in range(2, ngram_range + 1):
            for i in range(len(new_list) - ngram_value + 1):
                ngram = tuple(new_list[i : i + ngram_value])
                if ngram in token_indice:
                    new_list.append(token_indice[ngram])
        new_sequences.append(new_list)
    return new_sequences


def fea_process(word_list: list[str], config_list: list) -> list[list[int]]:
    tokenizer_path, cutlen, ngram_range, ti_path, maxlen = config_list[:5]
    t = joblib.load(tokenizer_path)  # the old design: the tokenizer loaded on every request
    x = texts_to_sequences(t, [word_list])
    x = padding(x, cutlen)
    with open(ti_path) as f:
        # OLD-DESIGN BASELINE ONLY: the n-gram table eval()-ed on every request, as
        # the system being replaced did. The file is our own setup output.
        token_indice = eval(f.read())  # noqa: S307
    x = add_ngram(x, token_indice, ngram_range)
    return padding(x, maxlen)


def _stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


class OldDesign:
    """``classify(words)`` the old way; one instance per benchmark cell."""

    def __init__(self, model_config_path: pathlib.Path, target: str, pooled: bool = False) -> None:
        self.model_config_path = model_config_path
        self.target = target
        # Pooled: one channel with the Labeler's options, so only the design differs.
        self._channel = grpc.insecure_channel(target, options=channel_options(target)) if pooled else None

    def _predict(self, model: str, rows: list[list[int]]) -> float:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = "serving_default"
        tensor = request.inputs["input"]
        tensor.dtype = types_pb2.DT_INT32
        tensor.tensor_shape.dim.add(size=len(rows))
        tensor.tensor_shape.dim.add(size=len(rows[0]))
        # Typed values from Python lists, as the old JSON body {"instances": x.tolist()} carried them.
        tensor.int_val.extend(v for row in rows for v in row)
        if self._channel is not None:
            response = _stub(self._channel).Predict(request, timeout=TIMEOUT_S)
        else:
            with grpc.insecure_channel(self.target) as channel:  # no pooling: a new connection per call
                response = _stub(channel).Predict(request, timeout=TIMEOUT_S)
        output = response.outputs["probability"]
        return (
            output.float_val[0] if output.float_val else float(np.frombuffer(output.tensor_content, "<f4")[0])
        )

    def _pred(self, word_list: list[str], label: str, results: list, errors: list) -> None:
        try:
            with open(self.model_config_path) as f:
                config_list = json.load(f)[label]  # the old design re-read its config per call
            x = fea_process(word_list, config_list)
            results.append([label, self._predict(config_list[5], x)])
        except Exception as exc:  # noqa: BLE001 - the old code dropped failures silently; we count them
            errors.append(exc)

    def classify(self, word_list: list[str], labels: list[str]) -> list:
        """One thread per model; results appended to a list the threads share.
        (The original list was module-global and never cleared, so it leaked
        across requests; that bug is not reproduced.) Raises if a model failed."""
        results: list = []
        errors: list = []
        threads = [
            threading.Thread(target=self._pred, args=(word_list, label, results, errors)) for label in labels
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return [r for r in results if r[1] >= THRESHOLD]

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
