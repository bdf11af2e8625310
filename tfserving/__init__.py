"""TensorFlow Serving's wire protocol, without the TensorFlow runtime.

What lives here: TF Serving's protobuf and gRPC modules (``protos``, over
``generated``, which scripts/gen_tfs_protos.py writes at build time from the
installed tensorflow-serving-api and tensorflow packages, never importing them)
and the one tensor codec (``codec``: TensorProto <-> numpy with TensorFlow's
rules) used by both the Labeler's client and the model server.

May import: protobuf, grpc, numpy and ``rpc.errors``; never TensorFlow, the
``tensorflow_serving`` package, or an app.
"""
