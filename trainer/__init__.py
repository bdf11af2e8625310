"""The Trainer app (``trainer.v1.Trainer``): load-gated training jobs run as
contained subprocesses, each exporting a numbered model version.

What lives here: the load gate (``gate``) and admission loop (``scheduler``),
job processes (``jobs``), the SQLite job store (``store``) over typed records
(``domain``), the core without gRPC (``service``), the gRPC edge (``servicer``,
``server``, ``cli``), the sample corpus (``corpus``) and the recipes that train
and export models (``recipes``); ``v1`` holds the generated stubs.

May import: the shared packages (``rpc``, ``modelspec``); never another app or
the dev stack. Only the recipes, run as job subprocesses, import TensorFlow.
"""
