"""The Labeler app (``labeler.v1.Labeler``): words -> features -> one Predict per
label model, all at once -> the labels at or above their threshold, plus the
labels that could not be scored.

What lives here: the typed settings (``config``), the core that validates,
fans out and applies thresholds without gRPC (``service``, over ``domain``),
model versions and their features (``registry``), how a Predict is sent
(``predictor``: direct or coalesced; ``overload``: admission and per-target
limits; ``cache``: answers by model, version and feature row; ``rollout``:
canary and shadow per label), the TF Serving client (``model_client``), the
metrics, and the gRPC edge (``servicer``, ``server``, ``cli``); ``v1`` holds the
generated stubs.

May import: the shared packages (``rpc``, ``modelspec``, ``tfserving``); never
another app, the dev stack, or TensorFlow (import contracts in pyproject.toml).
"""
