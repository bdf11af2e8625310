"""The feature pipeline: hand-computed examples, properties, and agreement with a
plain-Python reference of the Keras semantics (pad_sequences + the fastText
example's add_ngram)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import old_design
from modelspec.features import ARTIFACT_DIR, NGRAMS_FILE, FeaturePipeline, FeatureSettings
from trainer.corpus import generate

# ids: a=1 b=2 c=3; bigrams (1,2)->4 (2,3)->5; trigram (1,2,3)->6
VOCAB = ["a", "b", "c"]
TABLE = {(1, 2): 4, (2, 3): 5, (1, 2, 3): 6}


def pipeline(cutlen: int, ngram_range: int, maxlen: int, table=TABLE) -> FeaturePipeline:
    grams = {g: i for g, i in table.items() if len(g) <= ngram_range}
    return FeaturePipeline(VOCAB, grams, FeatureSettings(cutlen, ngram_range, maxlen))


# -- a plain-Python reference of the Keras semantics ---------------------------


# The old system's per-token feature code (bench/old_design.py: Keras
# pad_sequences defaults and the fastText example's add_ngram) is the oracle.
keras_pad_sequences = old_design.padding
keras_add_ngram = old_design.add_ngram


def reference_features(docs, vocabulary, token_indice, cutlen, ngram_range, maxlen):
    """The old system's fea_process, token by token: tokenizer, pad to cutlen,
    add n-grams, pad to maxlen."""
    word_index = {w: i + 1 for i, w in enumerate(vocabulary)}
    seqs = [[word_index[w.lower()] for w in doc if w.lower() in word_index] for doc in docs]
    seqs = keras_pad_sequences(seqs, cutlen)
    seqs = keras_add_ngram(seqs, token_indice, ngram_range)
    return np.array(keras_pad_sequences(seqs, maxlen), dtype=np.int32).reshape(len(docs), maxlen)


# -- hand-computed examples ----------------------------------------------------


def test_short_document_is_pre_padded_and_gets_its_ngram_ids():
    # [1,2,3] -> cutlen 5: [0,0,1,2,3] -> bigrams (1,2)=4, (2,3)=5 -> maxlen 9
    out = pipeline(5, 2, 9).transform([["a", "b", "c"]])
    assert out.tolist() == [[0, 0, 0, 0, 1, 2, 3, 4, 5]]
    assert out.dtype == np.int32


def test_long_document_keeps_its_last_cutlen_ids():
    # [1,2,3,1,2,3] -> last 4: [3,1,2,3] -> (1,2)=4 (2,3)=5; (3,1) unknown
    out = pipeline(4, 2, 6).transform([["a", "b", "c", "a", "b", "c"]])
    assert out.tolist() == [[3, 1, 2, 3, 4, 5]]


def test_maxlen_truncation_drops_from_the_front():
    # [0,1,2,3] + [4,5] = 6 items, maxlen 5 keeps the last five
    out = pipeline(4, 2, 5).transform([["a", "b", "c"]])
    assert out.tolist() == [[1, 2, 3, 4, 5]]


def test_trigrams_follow_bigrams_and_repeated_ngrams_repeat():
    # [1,2,3,1,2] -> bigrams (1,2)=4,(2,3)=5,(1,2)=4 then trigram (1,2,3)=6
    out = pipeline(5, 3, 10).transform([["a", "b", "c", "a", "b"]])
    assert out.tolist() == [[0, 1, 2, 3, 1, 2, 4, 5, 4, 6]]


def test_unknown_words_are_dropped_and_case_is_folded():
    out = pipeline(3, 2, 5).transform([["A", "zzz", "b", "未知"]])
    # [1,2] -> [0,1,2] -> (0,1) no, (1,2)=4
    assert out.tolist() == [[0, 0, 1, 2, 4]]


def test_empty_and_all_unknown_documents_are_all_padding():
    out = pipeline(3, 2, 4).transform([[], ["x", "y"]])
    assert out.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]


def test_ngram_range_one_adds_no_ngrams():
    out = pipeline(3, 1, 4).transform([["a", "b", "c"]])
    assert out.tolist() == [[0, 1, 2, 3]]


def test_batch_rows_are_independent_of_each_other():
    p = pipeline(4, 2, 6)
    docs = [["a", "b"], ["c"], ["a", "b", "c", "a", "b", "c"], []]
    batch = p.transform(docs)
    assert np.array_equal(batch, np.vstack([p.transform_one(d) for d in docs]))


def test_fit_ranks_words_by_frequency_and_prunes_rare_ngrams():
    docs = [["b", "a", "b"], ["b", "a"], ["c", "a", "b"]]
    p = FeaturePipeline.fit(docs, FeatureSettings(5, 2, 8), max_vocab=10, min_ngram_count=2)
    # b:4, a:3, c:1 -> b=1, a=2, c=3
    assert p.vocabulary == ["b", "a", "c"]
    # bigrams (b,a)x2 (a,b)x2 (c,a)x1 -> the two seen twice kept, ids after the vocabulary
    assert sorted(p.ngram_table) == [(1, 2), (2, 1)]
    assert sorted(p.ngram_table.values()) == [4, 5]
    assert p.num_features == 1 + 3 + 2


def test_fit_caps_the_vocabulary():
    p = FeaturePipeline.fit(
        [["a", "b", "c", "a", "b", "a"]], FeatureSettings(5, 2, 8), max_vocab=2, min_ngram_count=1
    )
    assert p.vocabulary == ["a", "b"]
    assert p.transform([["c"]]).tolist() == [[0] * 8]


def test_fit_leaves_rare_words_out_and_they_are_then_dropped_like_unknown_words():
    docs = [["a", "b", "rare"], ["a", "b"], ["a", "once"]]
    p = FeaturePipeline.fit(docs, FeatureSettings(4, 2, 6), min_word_count=2, min_ngram_count=1)
    assert p.vocabulary == ["a", "b"]
    # A training document of rare words only becomes all padding, exactly as a
    # served document of unknown words does: training sees what serving sees.
    assert p.transform([["rare", "once"]]).tolist() == p.transform([["never", "seen"]]).tolist() == [[0] * 6]
    assert p.transform([["a", "rare", "b"]]).tolist() == p.transform([["a", "b"]]).tolist()
    # The default keeps every word, as before.
    assert FeaturePipeline.fit(docs, FeatureSettings(4, 2, 6)).vocabulary == ["a", "b", "rare", "once"]


def test_settings_reject_impossible_lengths():
    with pytest.raises(ValueError, match="cutlen and maxlen"):
        FeatureSettings(0, 2, 10)
    with pytest.raises(ValueError, match="ngram_range"):
        FeatureSettings(10, 4, 10)


# -- agreement with the reference ----------------------------------------------

SAMPLE_DOCS = [d["words"] for d in generate(docs_per_label=60, seed=3)]


@pytest.mark.parametrize(
    "cutlen,ngram_range,maxlen", [(60, 2, 119), (10, 3, 25), (5, 2, 7), (30, 1, 20), (1, 3, 2)]
)
def test_matches_the_keras_reference_on_a_generated_corpus(cutlen, ngram_range, maxlen):
    fit_docs, docs = SAMPLE_DOCS[:200], SAMPLE_DOCS[200:]
    p = FeaturePipeline.fit(
        fit_docs, FeatureSettings(cutlen, ngram_range, maxlen), max_vocab=300, min_ngram_count=2
    )
    assert bool(p.ngram_table) == (ngram_range > 1 and cutlen > 1), "the corpus must exercise n-grams"
    expected = reference_features(docs, p.vocabulary, p.ngram_table, cutlen, ngram_range, maxlen)
    assert np.array_equal(p.transform(docs), expected)


words = st.lists(st.text(max_size=6) | st.sampled_from(VOCAB + ["A", "B"]), max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    docs=st.lists(words, max_size=8),
    cutlen=st.integers(1, 12),
    ngram_range=st.integers(1, 3),
    maxlen=st.integers(1, 30),
)
def test_never_raises_and_shape_and_dtype_are_fixed(docs, cutlen, ngram_range, maxlen):
    p = pipeline(cutlen, ngram_range, maxlen)
    out = p.transform(docs)
    assert out.shape == (len(docs), maxlen)
    assert out.dtype == np.int32
    assert out.min(initial=0) >= 0 and out.max(initial=0) < p.num_features
    assert np.array_equal(out, reference_features(docs, VOCAB, p.ngram_table, cutlen, ngram_range, maxlen))


@settings(max_examples=50, deadline=None)
@given(doc=words)
def test_transform_one_is_one_row_of_maxlen(doc):
    out = pipeline(60, 2, 119).transform_one(doc)
    assert out.shape == (1, 119) and out.dtype == np.int32


# -- artifacts -------------------------------------------------------------------


def test_saved_then_loaded_pipeline_gives_the_same_matrix(tmp_path):
    docs = SAMPLE_DOCS
    p = FeaturePipeline.fit(docs[:250], FeatureSettings(12, 3, 30), max_vocab=400, min_ngram_count=2)
    p.save(tmp_path, label="影视", model="movie")
    loaded, meta = FeaturePipeline.load(tmp_path)
    assert np.array_equal(loaded.transform(docs), p.transform(docs))
    assert (meta["label"], meta["model"], meta["cutlen"], meta["ngram_range"], meta["maxlen"]) == (
        "影视",
        "movie",
        12,
        3,
        30,
    )


def test_artifacts_are_json_and_a_pickle_free_npz(tmp_path):
    p = FeaturePipeline.fit(SAMPLE_DOCS[:100], FeatureSettings(), min_ngram_count=2)
    out = p.save(tmp_path)
    for name in ("features.json", "vocabulary.json"):
        json.loads((out / name).read_text())
    with np.load(out / NGRAMS_FILE, allow_pickle=False) as data:
        assert all(data[k].dtype == np.int64 for k in data.files)
    assert out == tmp_path / ARTIFACT_DIR


def test_load_refuses_an_unknown_format_version(tmp_path):
    p = pipeline(4, 2, 6)
    out = p.save(tmp_path)
    meta = json.loads((out / "features.json").read_text())
    meta["format_version"] = 99
    (out / "features.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version"):
        FeaturePipeline.load(tmp_path)


def test_shuffled_batches_give_the_same_rows():
    p = FeaturePipeline.fit(SAMPLE_DOCS[:200], FeatureSettings(), min_ngram_count=2)
    docs = SAMPLE_DOCS[200:260]
    order = list(range(len(docs)))
    random.Random(0).shuffle(order)
    assert np.array_equal(p.transform(docs)[order], p.transform([docs[i] for i in order]))
