"""The model-artifact contract between training and serving.

What lives here: the one feature pipeline (``features``: words -> model input
rows, shared by the recipe that trains and the Labeler that serves), and what a
version directory must hold and how it is named.

May import: numpy and the standard library (and ``rpc.errors`` for the errors a
caller sees); never gRPC, TensorFlow or an app.
"""
