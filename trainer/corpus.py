"""Sample corpus: a seeded generator of segmented Chinese documents.

``python -m trainer.corpus --out DIR --seed 0 [--docs-per-label N]
[--background FILE]`` writes
``DIR/train.jsonl`` and ``DIR/test.jsonl`` (held-out split), one document per
line: ``{"words": [...], "labels": ["影视"]}``.

Documents mix topic words with shared common and function words; 影视/明星 and
美妆/时尚 share words, some documents carry two labels, a few words of another
topic leak in, and there are negative documents that carry no label: other
topics (sports, food, tech, travel, finance, weather, education, health, cars),
everyday chatter, and text of unknown words. Learnable, but not by a single word.
With ``--background`` (``make run`` gives trainer.background's training pool),
paragraphs of real news text join as negatives too (issue 23).

``general_documents`` and ``unknown_documents`` are evaluation sets kept apart
from any training corpus (own seeds, own vocabulary mix): a training job reports
its false-positive rate on them.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import pathlib
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

# The four sample models: model name -> label.
SAMPLE_MODELS: dict[str, str] = {"movie": "影视", "beauty": "美妆", "star": "明星", "fashion": "时尚"}
# The old system's example; 影视 says yes, 美妆 says no.
EXAMPLE_WORDS = ["霸王别姬", "是一部", "非常", "值得", "看的", "电影"]

# The word lists live in a data file of the package (trainer/data/sample_words.json):
# each topic's words (the four labels' and the nine negative topics'), the words
# kept for the evaluation sets only, the words two topics share, the common and
# function words, and the short phrases a topic repeats. Data, not code; the
# generator reads them in the file's order, so a seed gives the same corpus.
WORDS_FILE = "sample_words.json"


def _load_words() -> dict[str, Any]:
    text = importlib.resources.files("trainer.data").joinpath(WORDS_FILE).read_text(encoding="utf-8")
    return json.loads(text)


_WORDS = _load_words()
TOPIC_WORDS: dict[str, list[str]] = _WORDS["topic_words"]
LABELS = list(SAMPLE_MODELS.values())
NEGATIVE_TOPICS = [t for t in TOPIC_WORDS if t not in LABELS]

# The general-text evaluation set (see ``general_documents``) is kept apart from the
# training negatives: besides another seed, it draws on words no training document
# has (more of each negative topic, and topics of its own), so its false-positive
# rate says how a model treats text it was not taught to reject.
HELD_OUT_WORDS: dict[str, list[str]] = _WORDS["held_out_words"]
EVAL_ONLY_TOPICS: dict[str, list[str]] = _WORDS["eval_only_topics"]
# Words two topics share: a document with them alone cannot be told apart.
SHARED_WORDS: dict[str, list[str]] = _WORDS["shared_words"]
# Which second label a two-label document of each topic may carry.
PARTNERS: dict[str, list[str]] = _WORDS["partners"]
COMMON_WORDS: list[str] = _WORDS["common_words"]
FUNCTION_WORDS: list[str] = _WORDS["function_words"]
# Short phrases a topic tends to repeat; {t} is filled with one of its words.
TEMPLATES: dict[str, list[list[str]]] = _WORDS["templates"]

DEFAULT_DOCS_PER_LABEL = 2000
TEST_FRACTION = 0.15
TWO_LABEL_FRACTION = 0.15
MIN_TOPIC_WORDS = 2
# Negative documents that carry no evidence at all, per label's documents: everyday
# chatter (common and function words only) and text made of words nobody has seen
# (typos, names, other scripts). Without them a model is never shown what "no
# evidence" looks like, and answers it with whatever its padding embedding and
# bias happen to say.
CHATTER_FRACTION = 0.15
UNKNOWN_FRACTION = 0.15
# Real background text (trainer.background: news paragraphs fetched at set-up)
# as negatives, per label's documents: the synthetic documents share their
# function words with the positives, so without real text a model learns that
# plain Chinese grammar is evidence (issue 23). Drawn with a seed of its own, so
# the synthetic part of a corpus is the same with or without it.
BACKGROUND_FRACTION = 0.5
BACKGROUND_SEED_OFFSET = 7_919
# Seeds of the evaluation sets, far from any corpus seed a user would pick.
GENERAL_EVAL_SEED = 1_000_003
UNKNOWN_EVAL_SEED = 1_000_033
# Pseudo-words: latin letters or CJK characters (U+4E00..U+9FA5) at random, so
# each is (almost surely) seen once: a vocabulary fitted with a minimum count
# leaves it out, as it leaves out an unknown word at serving time.
LATIN = "abcdefghijklmnopqrstuvwxyz"
CJK_FIRST, CJK_LAST = 0x4E00, 0x9FA5


def _zipf_weights(n: int) -> list[float]:
    # Topic words are not equally frequent; a gentle Zipf curve.
    return [1.0 / (rank + 1) ** 0.7 for rank in range(n)]


class _Generator:
    def __init__(
        self, seed: int, topic_words: dict[str, list[str]] | None = None, even: bool = False
    ) -> None:
        self.rng = random.Random(seed)
        self.topic_words = TOPIC_WORDS if topic_words is None else topic_words
        self.weights = {
            t: [1.0] * len(w) if even else _zipf_weights(len(w)) for t, w in self.topic_words.items()
        }

    def topic_word(self, topic: str) -> str:
        return self.rng.choices(self.topic_words[topic], self.weights[topic])[0]

    def clause(self, topics: Sequence[str]) -> list[str]:
        rng = self.rng
        primary = topics[0]
        if primary in TEMPLATES and rng.random() < 0.25:
            template = rng.choice(TEMPLATES[primary])
            return [self.topic_word(primary) if w == "{t}" else w for w in template]
        words = []
        for _ in range(rng.randint(3, 8)):
            r = rng.random()
            if r < 0.36:
                topic = primary if len(topics) == 1 or rng.random() < 0.55 else topics[1]
                words.append(self.topic_word(topic))
            elif r < 0.44 and primary in SHARED_WORDS:
                words.append(rng.choice(SHARED_WORDS[primary]))
            elif r < 0.48:
                # Noise: a word of an unrelated topic.
                words.append(self.topic_word(rng.choice(list(self.topic_words))))
            elif r < 0.74:
                words.append(rng.choice(COMMON_WORDS))
            else:
                words.append(rng.choice(FUNCTION_WORDS))
        return words

    def document(self, topics: Sequence[str]) -> list[str]:
        words: list[str] = []
        for _ in range(self.rng.randint(1, 4)):
            words += self.clause(topics)
        # A document says what it is about at least twice per topic (a short
        # one could otherwise be all common words, unlearnable noise).
        for topic in topics:
            present = set(self.topic_words[topic])
            for _ in range(MIN_TOPIC_WORDS - sum(w in present for w in words)):
                words.insert(self.rng.randint(0, len(words)), self.topic_word(topic))
        return words

    def chatter(self) -> list[str]:
        """Everyday words of no topic: 1 to 8 common and function words."""
        rng = self.rng
        return [
            rng.choice(COMMON_WORDS if rng.random() < 0.5 else FUNCTION_WORDS)
            for _ in range(rng.randint(1, 8))
        ]

    def pseudo_word(self) -> str:
        rng = self.rng
        if rng.random() < 0.5:
            return "".join(rng.choice(LATIN) for _ in range(rng.randint(2, 6)))
        return "".join(chr(rng.randint(CJK_FIRST, CJK_LAST)) for _ in range(rng.randint(1, 3)))

    def unknown(self) -> list[str]:
        """1 to 8 pseudo-words, now and then with a function word among them."""
        rng = self.rng
        words = [self.pseudo_word() for _ in range(rng.randint(1, 8))]
        for _ in range(rng.choice((0, 0, 1, 2))):
            words.insert(rng.randint(0, len(words)), rng.choice(FUNCTION_WORDS))
        return words


def generate(
    docs_per_label: int = DEFAULT_DOCS_PER_LABEL,
    seed: int = 0,
    background: Sequence[Sequence[str]] = (),
    background_docs: int | None = None,
) -> list[dict]:
    """Documents ``{"words": [...], "labels": [...]}`` in a seeded random order.

    Each label is the main topic of ``docs_per_label`` documents (some of which
    carry a second label too); as many again are negative documents of other
    topics (sports, food, tech, travel, finance, weather, education, health,
    cars), and a further ``CHATTER_FRACTION`` and ``UNKNOWN_FRACTION`` of
    ``docs_per_label`` are negative documents without evidence: everyday
    chatter, and pseudo-words.

    With ``background`` (paragraphs of real text, trainer.background's training
    pool), ``background_docs`` of them (default ``BACKGROUND_FRACTION`` of
    ``docs_per_label``; all when fewer) join as negatives, drawn and mixed in
    by a generator of their own: without them, the same seed gives the same
    documents as before.
    """
    gen = _Generator(seed)
    docs = []
    for label in LABELS:
        for _ in range(docs_per_label):
            topics = [label]
            if gen.rng.random() < TWO_LABEL_FRACTION:
                topics.append(gen.rng.choice(PARTNERS[label]))
            docs.append({"words": gen.document(topics), "labels": topics})
    for _ in range(docs_per_label):
        docs.append({"words": gen.document([gen.rng.choice(NEGATIVE_TOPICS)]), "labels": []})
    for _ in range(round(docs_per_label * CHATTER_FRACTION)):
        docs.append({"words": gen.chatter(), "labels": []})
    for _ in range(round(docs_per_label * UNKNOWN_FRACTION)):
        docs.append({"words": gen.unknown(), "labels": []})
    gen.rng.shuffle(docs)
    if background:
        docs = _with_background(docs, background, docs_per_label, seed, background_docs)
    return docs


def _with_background(
    docs: list[dict],
    background: Sequence[Sequence[str]],
    docs_per_label: int,
    seed: int,
    count: int | None,
) -> list[dict]:
    rng = random.Random(seed + BACKGROUND_SEED_OFFSET)
    count = round(docs_per_label * BACKGROUND_FRACTION) if count is None else count
    chosen = rng.sample(range(len(background)), min(count, len(background)))
    mixed = docs + [{"words": list(background[i]), "labels": []} for i in sorted(chosen)]
    rng.shuffle(mixed)
    return mixed


def general_documents(count: int, seed: int = GENERAL_EVAL_SEED) -> list[dict]:
    """General text for measuring false positives: ``{"words", "labels": [], "topic"}``.

    Topics none of the sample labels covers, with a vocabulary mix no training
    corpus has: each negative topic's words plus its ``HELD_OUT_WORDS`` (drawn
    evenly), and the ``EVAL_ONLY_TOPICS``; the noise words come from these
    topics only, never from a label's.
    """
    topic_words = {t: TOPIC_WORDS[t] + HELD_OUT_WORDS.get(t, []) for t in NEGATIVE_TOPICS}
    topic_words.update(EVAL_ONLY_TOPICS)
    gen = _Generator(seed, topic_words, even=True)
    topics = list(topic_words)
    return [
        {"words": gen.document([topic]), "labels": [], "topic": topic}
        for topic in (topics[i % len(topics)] for i in range(count))
    ]


def unknown_documents(count: int, seed: int = UNKNOWN_EVAL_SEED) -> list[dict]:
    """Text without a known word (pseudo-words, a stray function word), and lone
    function words: ``{"words", "labels": []}``; no model should label any of it."""
    gen = _Generator(seed)
    docs = [{"words": [w], "labels": []} for w in FUNCTION_WORDS[: count // 4]]
    while len(docs) < count:
        docs.append({"words": gen.unknown(), "labels": []})
    return docs


# -- a synthetic many-label corpus (tests and benchmarks of bundles) ---------------

SYNTHETIC_WORDS_PER_LABEL = 12
SYNTHETIC_MAX_LABELS_PER_DOC = 3


def synthetic_labels(n_labels: int) -> list[str]:
    """The labels of the synthetic corpus: 主题000, 主题001, ..."""
    return [f"主题{j:03d}" for j in range(n_labels)]


def synthetic_vocabulary(
    n_labels: int, words_per_label: int = SYNTHETIC_WORDS_PER_LABEL
) -> dict[str, list[str]]:
    """Each synthetic label's own words (词<label>_<k>), its vocabulary signal."""
    return {
        label: [f"词{j:03d}_{k:02d}" for k in range(words_per_label)]
        for j, label in enumerate(synthetic_labels(n_labels))
    }


def generate_many_labels(
    n_labels: int,
    docs_per_label: int = 50,
    seed: int = 0,
    words_per_label: int = SYNTHETIC_WORDS_PER_LABEL,
) -> list[dict]:
    """A deterministic multi-label corpus of ``n_labels`` labels.

    Each label has its own vocabulary (synthetic_vocabulary); a document
    carries 1..SYNTHETIC_MAX_LABELS_PER_DOC labels (each label is a main label
    of ``docs_per_label`` documents) and says each of them with 2-4 of its
    words, among common and function words and one stray word of an unrelated
    label now and then; a tenth as many documents again carry no label.
    Same arguments, same corpus.
    """
    if n_labels < 1 or docs_per_label < 1:
        raise ValueError("n_labels and docs_per_label must be >= 1")
    rng = random.Random(seed)
    vocabulary = synthetic_vocabulary(n_labels, words_per_label)
    labels = list(vocabulary)
    weights = _zipf_weights(words_per_label)

    def document(carried: Sequence[str]) -> list[str]:
        words: list[str] = []
        for label in carried:
            words += rng.choices(vocabulary[label], weights, k=rng.randint(2, 4))
        for _ in range(rng.randint(3, 8)):
            words.append(rng.choice(COMMON_WORDS) if rng.random() < 0.6 else rng.choice(FUNCTION_WORDS))
        if rng.random() < 0.2:
            words.append(rng.choice(vocabulary[rng.choice(labels)]))
        rng.shuffle(words)
        return words

    docs = []
    for label in labels:
        for _ in range(docs_per_label):
            extra = rng.randint(0, min(SYNTHETIC_MAX_LABELS_PER_DOC, n_labels) - 1)
            carried = [label, *rng.sample([x for x in labels if x != label], extra)] if extra else [label]
            docs.append({"words": document(carried), "labels": carried})
    for _ in range(max(1, n_labels * docs_per_label // 10)):
        docs.append({"words": document([]), "labels": []})
    rng.shuffle(docs)
    return docs


def write_many_label_corpus(
    out_dir: str | pathlib.Path,
    n_labels: int,
    docs_per_label: int = 50,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
) -> tuple[pathlib.Path, pathlib.Path]:
    """generate_many_labels into ``out_dir``/train.jsonl and test.jsonl."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = generate_many_labels(n_labels, docs_per_label, seed)
    n_test = int(round(len(docs) * test_fraction))
    train, test = out / "train.jsonl", out / "test.jsonl"
    write_jsonl(train, docs[n_test:])
    write_jsonl(test, docs[:n_test])
    return train, test


def write_jsonl(path: str | pathlib.Path, docs: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")


def read_jsonl(path: str | pathlib.Path) -> Iterator[dict]:
    """Documents of a corpus file; a malformed line raises ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                words, labels = doc["words"], doc.get("labels", [])
                if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
                    raise TypeError("words must be a list of strings")
                if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
                    raise TypeError("labels must be a list of strings")
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}:{lineno}: not a corpus line ({e}); expected "
                    '{"words": ["..."], "labels": ["..."]}'
                ) from None
            yield {"words": words, "labels": labels}


def write_corpus(
    out_dir: str | pathlib.Path,
    seed: int = 0,
    docs_per_label: int = DEFAULT_DOCS_PER_LABEL,
    test_fraction: float = TEST_FRACTION,
    background: str | pathlib.Path | None = None,
    background_docs: int | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Generate a corpus into ``out_dir``; returns the (train, test) paths.
    ``background``: a file of real paragraphs (trainer.background's
    ``train.jsonl``) to draw background negatives from (see ``generate``)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paragraphs = [d["words"] for d in read_jsonl(background)] if background else []
    docs = generate(docs_per_label, seed, paragraphs, background_docs)
    n_test = int(round(len(docs) * test_fraction))
    train, test = out / "train.jsonl", out / "test.jsonl"
    write_jsonl(train, docs[n_test:])
    write_jsonl(test, docs[:n_test])
    return train, test


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs-per-label", type=int, default=DEFAULT_DOCS_PER_LABEL)
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION)
    parser.add_argument(
        "--background",
        help="JSONL of real paragraphs to add as negatives (python -m trainer.background writes "
        "var/background/train.jsonl)",
    )
    parser.add_argument(
        "--background-docs",
        type=int,
        help=f"how many background paragraphs (default {BACKGROUND_FRACTION} x --docs-per-label)",
    )
    args = parser.parse_args(argv)
    if args.docs_per_label < 1:
        parser.error("--docs-per-label must be >= 1")
    if not 0.0 < args.test_fraction < 1.0:
        parser.error("--test-fraction must be between 0 and 1")
    if args.background_docs is not None and args.background_docs < 0:
        parser.error("--background-docs must be >= 0")
    try:
        train, test = write_corpus(
            args.out,
            args.seed,
            args.docs_per_label,
            args.test_fraction,
            args.background,
            args.background_docs,
        )
    except (OSError, ValueError) as e:
        parser.error(f"--background: {e}")
    print(f"wrote {train} and {test}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
