"""labeler-modelserver: a TensorFlow-Serving-compatible gRPC model server.

It speaks ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata)
and ``tensorflow.serving.ModelService`` (GetModelStatus,
HandleReloadConfigRequest), reads ``tensorflow_model_server``'s flags and its
text-format ``ModelServerConfig``, and serves SavedModel versions from numeric
directories under each model's ``base_path``. It is the one place on the
serving path that imports TensorFlow.

Modules: ``config`` (the server's settings, from the flags), ``model_config``
(TF Serving's ``ModelServerConfig`` files, validation), ``loader`` (one
SavedModel version in its own session), ``manager`` (versions, policies,
labels, polling, atomic swaps), ``batching`` (server-side batching),
``service`` (TF Serving's request semantics, no gRPC; tensors through
``tfserving.codec``), ``servicer`` (thin servicers), ``server``
(``create_server``), ``cli``.

May import: the shared packages (``rpc``, ``modelspec``, ``tfserving``), never
another app (``labeler``, ``trainer``). Importing this package imports nothing
heavy.
"""
