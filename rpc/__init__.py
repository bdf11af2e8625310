"""gRPC plumbing shared by the three servers (Labeler, Trainer, model server).

What lives here: the domain error classes and their one status-code table
(``errors``, free of gRPC so request cores can raise them), server construction,
interceptors, health, reflection and graceful shutdown (``server``), TLS and
bearer tokens (``security``), and the container health probe (``healthcheck``).

May import: grpc and the standard library; never an app (``labeler``,
``trainer``, ``modelserver``) or the dev stack.
"""
