"""gRPC plumbing shared by the three servers (Labeler, Trainer, model server).

What lives here: the domain error classes and the one status table, name ->
code number for gRPC and TF Serving alike, with ``shown`` for echoed request
text (``errors``, free of gRPC so request cores can raise them); server
construction with one server per port, interceptors, health, reflection, the
started-server handle every ``create_server`` returns and graceful shutdown
(``server``); ``host:port`` formatting and the loopback test (``addresses``);
TLS, bearer tokens and the tokens-off-loopback rule (``security``); and the
container health probe (``healthcheck``).

May import: grpc and the standard library; never an app (``labeler``,
``trainer``, ``modelserver``) or the dev stack.
"""
