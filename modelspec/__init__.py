"""The model-artifact contract between training and serving.

What lives here: the one feature pipeline (``features``: words -> model input
rows, shared by the recipe that trains and the Labeler that serves); the names
(``names``: the one model-name rule the Labeler's config and the Trainer both
apply, and an exported version's signature, input and output names); and what
counts as a version directory (``versions``: read by the model server, the
recipes' export and the dev stack); and the report lines a recipe prints and
the Trainer parses (``report``: progress and result records).

May import: numpy and the standard library (and ``rpc.errors`` for the errors a
caller sees); never gRPC, TensorFlow or an app.
"""
