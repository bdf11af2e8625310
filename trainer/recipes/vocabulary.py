"""The fastText recipe's vocabulary rules and real background text (issue 23).

Two rules keep grammar from being taken for evidence, whatever the corpus:
``discriminative_words`` keeps a word only when it tells some label's positives
from its negatives by more than chance would, and ``stopwords`` are the
commonest words of real text (trainer.background's training pool). A word
either rule leaves out is an unknown word at serving: dropped, no evidence.
``background_texts`` reads the held-out real paragraphs every job scores.
No TensorFlow here.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

from rpc.errors import InvalidArgument
from trainer import background
from trainer.corpus import read_jsonl

# The vocabulary keeps a word only when its document frequency among a label's
# positives and among its negatives differ by at least this log ratio (add-one
# smoothed), beyond one standard error, for some label: a word spread evenly
# over the classes, as function words are, is left out, so at serving it is an
# unknown word and carries no evidence (issue 23, docs/model-quality.md). 0
# keeps every word.
DEFAULT_MIN_WORD_LOG_RATIO = 0.4
# Words found in at least this share of the paragraphs of real text
# (trainer.background's training pool: news, never its held-out slice) are
# grammar and the commonest words of the language, not evidence for any
# label: left out of the vocabulary whatever the corpus says of them (a
# synthetic corpus can make 的 look like evidence). 0 keeps them.
DEFAULT_STOPWORD_SHARE = 0.05


def background_texts(path: str | pathlib.Path | None) -> list[list[str]]:
    """Held-out real background paragraphs to score (issue 23): ``path``, or
    trainer.background's held-out slice when it was fetched; [] (not measured,
    said on stderr) when no path was given and it was not."""
    if path is None:
        path = background.held_out_path()
        if not path.is_file():
            print(
                f"fasttext: no background text at {path}: the result line's background_labeled_rate is "
                "null (python -m trainer.background fetches it)",
                file=sys.stderr,
                flush=True,
            )
            return []
    try:
        return [d["words"] for d in read_jsonl(path)]
    except OSError as e:
        raise InvalidArgument(f"cannot read the background text: {e}") from None
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


def stopwords(path: str | pathlib.Path | None, share: float) -> set[str]:
    """Words (lower-cased) in at least ``share`` of the paragraphs of ``path``
    (default: trainer.background's training pool; none, said on stderr, when
    it was not fetched)."""
    import collections

    if share <= 0:
        return set()
    if path is None:
        path = background.train_path()
        if not path.is_file():
            print(f"fasttext: no background text at {path}: no stopwords", file=sys.stderr, flush=True)
            return set()
    counts: collections.Counter[str] = collections.Counter()
    n = 0
    try:
        for d in read_jsonl(path):
            counts.update({w.lower() for w in d["words"]})
            n += 1
    except OSError as e:
        raise InvalidArgument(f"cannot read the stopword text: {e}") from None
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    return {w for w, c in counts.items() if c >= share * n} if n else set()


def discriminative_words(
    docs: Sequence[dict], labels: Sequence[str], min_log_ratio: float, error_weight: float = 1.0
) -> set[str]:
    """The words (lower-cased, as the vocabulary keeps them) whose add-one
    smoothed document frequency among some label's positives and among its
    negatives differ by a log ratio of at least ``min_log_ratio`` beyond
    ``error_weight`` standard errors of that log ratio: evidence for or
    against a label. Words spread evenly over the classes (function words,
    in any corpus where they are) are not among them, nor are words that
    differ by chance in a small corpus."""
    import collections
    import math

    total: collections.Counter[str] = collections.Counter()
    positive = {label: collections.Counter[str]() for label in labels}
    carried = dict.fromkeys(labels, 0)
    for d in docs:
        words = {w.lower() for w in d["words"]}
        total.update(words)
        for label in d["labels"]:
            if label in positive:
                positive[label].update(words)
                carried[label] += 1
    n = len(docs)
    kept = set()
    for word, count in total.items():
        for label in labels:
            p, n_pos = positive[label][word], carried[label]
            q = count - p
            ratio = math.log((p + 1) / (n_pos + 2)) - math.log((q + 1) / (n - n_pos + 2))
            # Less its standard error: a word few documents carry must differ
            # by more than chance alone would make it.
            error = math.sqrt(1 / (p + 1) + 1 / (q + 1))
            if abs(ratio) - error_weight * error >= min_log_ratio:
                kept.add(word)
                break
    return kept
