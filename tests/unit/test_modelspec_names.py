"""The one model-name rule: the Labeler's config and the Trainer accept exactly
the same model names, so a label bound to a model can always be trained."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labeler import config
from labeler.v1 import config_pb2
from modelspec import names
from rpc.errors import InvalidArgument
from trainer.recipes import validate_model_name

SAMPLES = [
    "movie",
    "beauty_2",
    "m-1",
    "m" * 63,
    "m" * 64,
    "Movie",
    "MOVIE",
    "1movie",
    "_movie",
    "-rf",
    "a.b",
    ".",
    "..",
    "../etc",
    "a/b",
    "movie\x00",
    "movie ",
    "影视",
    "",
    "movie\n",
]


def labeler_accepts(model: str) -> bool:
    message = config_pb2.LabelerConfig()
    message.labels.add(label="影视", model=model)
    try:
        config.validate(message)
    except config.ConfigError:
        return False
    return True


def trainer_accepts(model: str) -> bool:
    try:
        validate_model_name(model)
    except InvalidArgument:
        return False
    return True


@pytest.mark.parametrize("model", SAMPLES)
def test_the_labeler_and_the_trainer_accept_the_same_model_names(model):
    assert labeler_accepts(model) == trainer_accepts(model) == names.is_model_name(model)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abzAZ09_-./ \x00影", max_size=70))
def test_any_name_is_accepted_by_both_or_by_neither(model):
    assert labeler_accepts(model) == trainer_accepts(model)


def test_the_rule_is_stated_where_a_name_is_refused():
    message = config_pb2.LabelerConfig()
    message.labels.add(label="影视", model="Movie")
    with pytest.raises(config.ConfigError, match="lowercase letters"):
        config.validate(message)
    with pytest.raises(InvalidArgument, match="lowercase letters"):
        validate_model_name("Movie")


def test_the_labeler_defaults_to_the_exported_signature():
    message = config_pb2.LabelerConfig()
    message.labels.add(label="影视", model="movie")
    spec = config.validate(message).labels[0]
    assert (spec.signature_name, spec.input_name, spec.output_name) == (
        names.SIGNATURE_NAME,
        names.INPUT_NAME,
        names.OUTPUT_NAME,
    )
