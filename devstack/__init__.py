"""The development stack behind ``make run``: a tool that starts the apps.

It starts the model server, the Trainer and the Labeler as subprocesses, has the
Trainer build the sample models on first start, and talks to them only through
their gRPC contracts. Nothing imports it.
"""
