"""The sample corpus generator."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import pytest

from trainer import corpus
from trainer.corpus import EXAMPLE_WORDS, LABELS, generate, read_jsonl, write_corpus


def test_same_seed_same_corpus_other_seed_other_corpus():
    assert generate(50, seed=7) == generate(50, seed=7)
    assert generate(50, seed=7) != generate(50, seed=8)


def test_every_label_has_its_documents_some_carry_two_and_some_none():
    docs = generate(docs_per_label=400, seed=0)
    # 4 labels' documents, as many of other topics, 60 of chatter, 60 of unknown words.
    assert len(docs) == 5 * 400 + 60 + 60
    per_label = collections.Counter(label for d in docs for label in d["labels"])
    for label in LABELS:
        # Its own 400, plus its share of the other topics' two-label documents.
        assert 400 <= per_label[label] <= 600, per_label
    two = [d for d in docs if len(d["labels"]) == 2]
    assert 0.08 * len(docs) < len(two) < 0.2 * len(docs)
    assert all(d["labels"][0] != d["labels"][1] for d in two)
    assert sum(not d["labels"] for d in docs) == 400 + 60 + 60
    assert set(per_label) == set(LABELS)


def _topic_words() -> set[str]:
    return {w for words in corpus.TOPIC_WORDS.values() for w in words} | {
        w for words in corpus.SHARED_WORDS.values() for w in words
    }


def test_negatives_cover_other_topics_chatter_and_unknown_words():
    docs = generate(docs_per_label=400, seed=0)
    negatives = [d["words"] for d in docs if not d["labels"]]
    # Each topic document is about the topic it has most words of.
    topics = collections.Counter(
        max(corpus.NEGATIVE_TOPICS, key=lambda t: sum(w in corpus.TOPIC_WORDS[t] for w in words))
        for words in negatives
    )
    for topic in ("财经", "天气", "体育", "美食", "旅游", "科技", "教育", "健康", "汽车"):
        assert topic in corpus.NEGATIVE_TOPICS and topics[topic] >= 25, topics
    known = _topic_words()
    everyday = set(corpus.COMMON_WORDS) | set(corpus.FUNCTION_WORDS)
    chatter = [w for w in negatives if set(w) <= everyday]
    unknown = [w for w in negatives if not set(w) & (known | set(corpus.COMMON_WORDS))]
    assert len(chatter) >= 60 and len(unknown) >= 60
    # Unknown-word documents are made of words seen (almost always) once: a
    # vocabulary with a minimum count of 2 leaves them out.
    counts = collections.Counter(w for words in unknown for w in words if w not in corpus.FUNCTION_WORDS)
    assert sum(c == 1 for c in counts.values()) >= 0.95 * len(counts)


def test_general_evaluation_set_is_apart_from_the_training_negatives():
    general = corpus.general_documents(500)
    assert general == corpus.general_documents(500) and all(not d["labels"] for d in general)
    topics = collections.Counter(d["topic"] for d in general)
    assert set(topics) == set(corpus.NEGATIVE_TOPICS) | set(corpus.EVAL_ONLY_TOPICS)
    assert not set(topics) & set(LABELS)
    # Its own vocabulary: words no training corpus has.
    held_out = {w for words in corpus.HELD_OUT_WORDS.values() for w in words} | {
        w for words in corpus.EVAL_ONLY_TOPICS.values() for w in words
    }
    training_words = {w for d in generate(400, seed=0) for w in d["words"]}
    assert not held_out & training_words
    used = collections.Counter(w for d in general for w in d["words"])
    assert sum(used[w] for w in held_out) >= 0.1 * sum(used.values())
    # No word of a label's own topic.
    label_words = {w for label in LABELS for w in corpus.TOPIC_WORDS[label]}
    assert not label_words & set(used)


def test_unknown_evaluation_set_has_no_topic_word():
    docs = corpus.unknown_documents(200)
    assert len(docs) == 200 and docs == corpus.unknown_documents(200)
    words = {w for d in docs for w in d["words"]}
    assert not words & (_topic_words() | set(corpus.COMMON_WORDS))
    assert ["的"] in [d["words"] for d in docs]


def test_documents_are_nonempty_word_lists():
    for d in generate(100, seed=1):
        assert d["words"] and all(isinstance(w, str) and w and " " not in w for w in d["words"])


def test_the_old_example_words_occur_naturally():
    words = collections.Counter(w for d in generate(500, seed=0) for w in d["words"])
    for w in EXAMPLE_WORDS:
        assert words[w] > 0, w
    assert "霸王别姬" in corpus.TOPIC_WORDS["影视"] and "电影" in corpus.TOPIC_WORDS["影视"]
    assert {"是一部", "非常", "值得", "看的"} <= set(corpus.COMMON_WORDS)


def test_topics_share_words_so_no_single_word_decides():
    assert set(corpus.SHARED_WORDS["影视"]) & set(corpus.SHARED_WORDS["明星"])
    assert set(corpus.SHARED_WORDS["美妆"]) & set(corpus.SHARED_WORDS["时尚"])
    for topic, words in corpus.TOPIC_WORDS.items():
        assert len(words) >= 36, topic
        assert len(set(words)) == len(words), topic


def test_write_corpus_splits_train_and_test(tmp_path):
    train, test = write_corpus(tmp_path, seed=0, docs_per_label=100, test_fraction=0.2)
    train_docs, test_docs = list(read_jsonl(train)), list(read_jsonl(test))
    assert (len(train_docs), len(test_docs)) == (424, 106)  # 530 documents, a fifth held out
    everything = {json.dumps(d, ensure_ascii=False) for d in generate(100, seed=0)}
    assert {json.dumps(d, ensure_ascii=False) for d in train_docs + test_docs} == everything
    # UTF-8 text, not \u escapes: the files are meant to be read by people too.
    assert "影视" in train.read_text(encoding="utf-8") or "影视" in test.read_text(encoding="utf-8")


def test_command_line_writes_both_files(tmp_path):
    out = tmp_path / "c"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.corpus", "--out", str(out), "--seed", "3", "--docs-per-label", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        sum(1 for _ in read_jsonl(out / "train.jsonl")) + sum(1 for _ in read_jsonl(out / "test.jsonl"))
        == 5 * 20 + 3 + 3
    )
    bad = subprocess.run(
        [sys.executable, "-m", "trainer.corpus", "--out", str(out), "--docs-per-label", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--docs-per-label" in bad.stderr


@pytest.mark.parametrize(
    "line",
    [
        '{"words": "电影"}',
        '{"labels": []}',
        "not json",
        '{"words": [1, 2]}',
        '{"words": ["a"], "labels": "影视"}',
    ],
)
def test_read_jsonl_names_the_bad_line(tmp_path, line):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"words": ["电影"], "labels": ["影视"]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a corpus line"):
        list(read_jsonl(path))


# sha256 of the files write_corpus wrote, and of general_documents(600) /
# unknown_documents(200) as JSON lines, recorded from the generator of commit
# 62a6242, when the word lists were still Python literals in trainer/corpus.py
# (issue 25 item 7 moved them to trainer/data/sample_words.json).
_BEFORE_THE_DATA_FILE = {
    (0, 300): (
        "cca2476eba6650f577247eac42f52ca04569fca284b7fd35da4cdba4dde223dc",
        "4f5cf6173fde9ffe024711a350c281840169ed501bac1a2f7f1077f722291fda",
    ),
    (5, 120): (
        "b131af266d08950e6732c4f75aebc4385b3c5a6ce069776ff1d2a685531bc831",
        "d1d37528808bf4eaaacfe6bd75d70c8798657104903dc9704b3c2dcfdcaf2570",
    ),
}
_GENERAL_600 = "eba04cbc8184c513c301fb683450df48d96763f7598256fddc0845128956df26"
_UNKNOWN_200 = "e65ef2fe7cadb5bf34164a75913ba65c3592c1b6dc49d7cfa8b43935e12abf40"


def _sha256_lines(docs) -> str:
    import hashlib

    text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(("seed", "docs_per_label"), sorted(_BEFORE_THE_DATA_FILE))
def test_word_lists_from_the_data_file_give_byte_identical_corpora(tmp_path, seed, docs_per_label):
    import hashlib

    train, test = write_corpus(tmp_path, seed=seed, docs_per_label=docs_per_label)
    got = (hashlib.sha256(train.read_bytes()).hexdigest(), hashlib.sha256(test.read_bytes()).hexdigest())
    assert got == _BEFORE_THE_DATA_FILE[(seed, docs_per_label)]


def test_evaluation_sets_unchanged_by_the_data_file():
    assert _sha256_lines(corpus.general_documents(600)) == _GENERAL_600
    assert _sha256_lines(corpus.unknown_documents(200)) == _UNKNOWN_200


def test_word_lists_are_package_data_not_code():
    import importlib.resources
    import pathlib

    data = json.loads(
        importlib.resources.files("trainer.data").joinpath("sample_words.json").read_text("utf-8")
    )
    assert data["topic_words"] == corpus.TOPIC_WORDS
    assert data["function_words"] == corpus.FUNCTION_WORDS
    source = pathlib.Path(corpus.__file__).read_text(encoding="utf-8")
    assert "霸王别姬" in source  # only the example remains in the code
    assert "粉底液" not in source and len(source.splitlines()) < 500
