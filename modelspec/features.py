"""The one feature pipeline, shared by training and serving (pure numpy).

For one model with settings ``cutlen``, ``ngram_range`` and ``maxlen``:

1. words -> ids with the model's vocabulary; words not in it are dropped (a
   Keras ``Tokenizer`` without an OOV token); ids start at 1, 0 is padding;
2. pad/truncate to ``cutlen`` the Keras ``pad_sequences`` way: zeros lead and
   the *last* ``cutlen`` ids are kept;
3. append the id of every n-gram (2..ngram_range) of that padded sequence found
   in the n-gram table, in order of n, then position (the Keras fastText
   example's ``add_ngram``);
4. pad/truncate again to ``maxlen``, same convention.

Artifacts are stored as JSON (vocabulary, settings) and an ``.npz`` opened with
``allow_pickle=False``: nothing is ever unpickled or ``eval``-ed.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Where a model version keeps its feature artifacts, beside saved_model.pb.
ARTIFACT_DIR = "assets.extra"
SETTINGS_FILE = "features.json"
VOCAB_FILE = "vocabulary.json"
NGRAMS_FILE = "ngrams.npz"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """Sequence lengths of one model; the old system used 60, 2, 119."""

    cutlen: int = 60
    ngram_range: int = 2
    maxlen: int = 119

    def __post_init__(self) -> None:
        if self.cutlen < 1 or self.maxlen < 1:
            raise ValueError(f"cutlen and maxlen must be >= 1, got {self.cutlen} and {self.maxlen}")
        if not 1 <= self.ngram_range <= 3:
            # Keys pack an n-gram into one int64; 3 ids of up to 2**21 fit.
            raise ValueError(f"ngram_range must be 1..3, got {self.ngram_range}")


def _pad_front(rows: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """Keras ``pad_sequences`` defaults: keep the last ``length`` items, zeros lead."""
    out = np.zeros((len(rows), length), dtype=np.int32)
    for r, row in enumerate(rows):
        if row:
            tail = row[-length:]
            out[r, length - len(tail) :] = tail
    return out


class FeaturePipeline:
    """Vocabulary + n-gram table + settings of one model version."""

    def __init__(
        self,
        vocabulary: Sequence[str],
        ngram_table: Mapping[tuple[int, ...], int],
        settings: FeatureSettings,
    ) -> None:
        self.settings = settings
        self.vocabulary = list(vocabulary)
        self.word_index = {w: i + 1 for i, w in enumerate(self.vocabulary)}
        if len(self.word_index) != len(self.vocabulary):
            raise ValueError("vocabulary has duplicate words")
        self.ngram_table = dict(ngram_table)
        # Packing base: every id in an n-gram tuple is a word id <= len(vocabulary).
        self._base = len(self.vocabulary) + 1
        if self._base**3 >= 2**63:
            raise ValueError(f"vocabulary of {len(self.vocabulary)} words is too large to pack n-grams")
        # Per n: sorted packed keys and the matching feature ids, for searchsorted.
        self._lookup: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for n in range(2, settings.ngram_range + 1):
            items = [(self._pack(g), i) for g, i in self.ngram_table.items() if len(g) == n]
            items.sort()
            keys = np.array([k for k, _ in items], dtype=np.int64)
            ids = np.array([i for _, i in items], dtype=np.int32)
            self._lookup[n] = (keys, ids)

    # -- fitting (training side) -------------------------------------------------

    @classmethod
    def fit(
        cls,
        documents: Iterable[Sequence[str]],
        settings: FeatureSettings = FeatureSettings(),
        max_vocab: int = 20000,
        min_ngram_count: int = 2,
        min_word_count: int = 1,
    ) -> FeaturePipeline:
        """Fit the vocabulary and the n-gram table on training documents.

        Words are ranked by frequency (ties: first seen), as Keras' Tokenizer
        does, capped at ``max_vocab``, and those seen fewer than
        ``min_word_count`` times are left out: a training document then meets
        unknown words exactly as a served one does (dropped), so the model is
        taught what an unknown word means. N-grams are counted over each
        document's truncated id sequence; those seen fewer than
        ``min_ngram_count`` times are pruned (a full table grows past 250,000
        rows on 10,000 documents), and the rest get ids above the vocabulary.
        """
        documents = [list(d) for d in documents]
        counts: collections.Counter[str] = collections.Counter()
        for doc in documents:
            counts.update(w.lower() for w in doc)
        # Counter.most_common keeps first-seen order among equal counts.
        vocabulary = [w for w, c in counts.most_common(max_vocab) if c >= min_word_count]
        pipeline = cls(vocabulary, {}, settings)

        ngram_counts: collections.Counter[tuple[int, ...]] = collections.Counter()
        for doc in documents:
            seq = pipeline.ids(doc)[-settings.cutlen :]
            for n in range(2, settings.ngram_range + 1):
                ngram_counts.update(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))
        kept = [g for g, c in ngram_counts.most_common() if c >= min_ngram_count]
        start = len(vocabulary) + 1
        table = {g: start + k for k, g in enumerate(kept)}
        return cls(vocabulary, table, settings)

    # -- transforming (both sides) ----------------------------------------------

    @property
    def num_features(self) -> int:
        """Embedding input size: padding + words + n-grams."""
        return 1 + len(self.vocabulary) + len(self.ngram_table)

    def ids(self, words: Iterable[str]) -> list[int]:
        """Vocabulary ids of the known words, in order; unknown words dropped."""
        index = self.word_index
        return [i for i in (index.get(w.lower()) for w in words) if i is not None]

    def _pack(self, ngram: Sequence[int] | np.ndarray) -> int:
        key = 0
        for token in ngram:
            key = key * self._base + int(token)
        return key

    def transform(self, documents: Sequence[Sequence[str]]) -> np.ndarray:
        """Features of a batch of documents: int32 ``[len(documents), maxlen]``."""
        s = self.settings
        padded = _pad_front([self.ids(d) for d in documents], s.cutlen)
        batch = padded.shape[0]
        parts = [padded]
        masks = [np.ones_like(padded, dtype=bool)]
        wide = padded.astype(np.int64)
        for n, (keys, ids) in self._lookup.items():
            if s.cutlen < n:
                continue
            # Column slices, not sliding_window_view: same result, less fixed
            # overhead for the one-document Classify path.
            width = s.cutlen - n + 1
            packed = wide[:, :width].copy()
            for j in range(1, n):
                packed *= self._base
                packed += wide[:, j : j + width]
            if keys.size:
                pos = np.minimum(np.searchsorted(keys, packed), keys.size - 1)
                found = keys[pos] == packed
                parts.append(np.where(found, ids[pos], 0).astype(np.int32))
            else:
                found = np.zeros(packed.shape, dtype=bool)
                parts.append(np.zeros(packed.shape, dtype=np.int32))
            masks.append(found)
        values = np.concatenate(parts, axis=1)
        mask = np.concatenate(masks, axis=1)
        # Right-align the kept items of each row in maxlen columns (pre-padding,
        # pre-truncation): item k of c kept lands at maxlen - c + k.
        kept = mask.sum(axis=1, keepdims=True)
        target = s.maxlen - kept + np.cumsum(mask, axis=1) - 1
        select = mask & (target >= 0)
        out = np.zeros((batch, s.maxlen), dtype=np.int32)
        rows = np.broadcast_to(np.arange(batch)[:, None], mask.shape)
        out[rows[select], target[select]] = values[select]
        return out

    def fingerprint(self) -> str:
        """A digest of everything the features depend on (settings, vocabulary,
        n-gram table): equal digests, equal features for every document."""
        digest = hashlib.sha256()
        s = self.settings
        digest.update(f"{s.cutlen},{s.ngram_range},{s.maxlen}\n".encode())
        digest.update(json.dumps(self.vocabulary, ensure_ascii=False).encode())
        for n, (keys, ids) in sorted(self._lookup.items()):
            digest.update(f"\n{n}:{keys.size}\n".encode())
            digest.update(keys.tobytes())
            digest.update(ids.tobytes())
        return digest.hexdigest()

    def transform_one(self, words: Sequence[str]) -> np.ndarray:
        """Features of one document: int32 ``[1, maxlen]``."""
        return self.transform([words])

    # -- persistence -------------------------------------------------------------

    def save(self, version_dir: str | pathlib.Path, **metadata: object) -> pathlib.Path:
        """Write the artifacts into ``<version_dir>/assets.extra/``.

        ``metadata`` (label, model, signature and tensor names, ...) is stored
        beside the settings so a version's model and features cannot disagree.
        """
        out = pathlib.Path(version_dir) / ARTIFACT_DIR
        out.mkdir(parents=True, exist_ok=True)
        settings = {"format_version": FORMAT_VERSION, **dataclasses.asdict(self.settings), **metadata}
        (out / SETTINGS_FILE).write_text(json.dumps(settings, ensure_ascii=False, indent=2, sort_keys=True))
        (out / VOCAB_FILE).write_text(json.dumps(self.vocabulary, ensure_ascii=False))
        arrays: dict[str, np.ndarray] = {}
        for n in range(2, self.settings.ngram_range + 1):
            grams = [(g, i) for g, i in self.ngram_table.items() if len(g) == n]
            arrays[f"ngrams_{n}"] = np.array([g for g, _ in grams], dtype=np.int64).reshape(-1, n)
            arrays[f"ids_{n}"] = np.array([i for _, i in grams], dtype=np.int64)
        with open(out / NGRAMS_FILE, "wb") as f:
            # numpy's stub lets **arrays also match savez's allow_pickle: bool.
            np.savez(f, **arrays)  # type: ignore[arg-type]
        return out

    @classmethod
    def load(cls, version_dir: str | pathlib.Path) -> tuple[FeaturePipeline, dict]:
        """Read a version's artifacts; returns the pipeline and its metadata."""
        src = pathlib.Path(version_dir) / ARTIFACT_DIR
        meta = json.loads((src / SETTINGS_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{src / SETTINGS_FILE}: unsupported format_version {meta.get('format_version')!r}"
            )
        settings = FeatureSettings(int(meta["cutlen"]), int(meta["ngram_range"]), int(meta["maxlen"]))
        vocabulary = json.loads((src / VOCAB_FILE).read_text())
        table: dict[tuple[int, ...], int] = {}
        with np.load(src / NGRAMS_FILE, allow_pickle=False) as data:
            for n in range(2, settings.ngram_range + 1):
                for gram, i in zip(data[f"ngrams_{n}"].tolist(), data[f"ids_{n}"].tolist(), strict=False):
                    table[tuple(gram)] = i
        return cls(vocabulary, table, settings), meta
