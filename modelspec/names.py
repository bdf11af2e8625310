"""Names in the model-artifact contract: which model names a Labeler may be
configured with and a Trainer may train (the same rule for both, so every
configurable model can be trained), and the names an exported version's
serving signature uses.
"""

from __future__ import annotations

import re

# A model name is a directory under the model root and a word in a recipe's
# argv: one plain lowercase path component that cannot read as an option.
MODEL_NAME_MAX_CHARS = 63
MODEL_NAME = re.compile(rf"[a-z][a-z0-9_-]{{0,{MODEL_NAME_MAX_CHARS - 1}}}")
MODEL_NAME_RULE = f"use 1-{MODEL_NAME_MAX_CHARS} lowercase letters, digits, '_' or '-', starting with a letter (e.g. 'movie')"


def is_model_name(name: str) -> bool:
    """Whether ``name`` may name a model (a Labeler label's model, a Trainer job's)."""
    return MODEL_NAME.fullmatch(name) is not None


# The serving signature of every exported version: int32 ``input``
# [batch, maxlen] -> float32 ``probability`` [batch, 1]. The Labeler's defaults
# for a label's signature_name / input_name / output_name.
SIGNATURE_NAME = "serving_default"
INPUT_NAME = "input"
OUTPUT_NAME = "probability"
