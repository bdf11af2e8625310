"""TensorFlow Serving's wire protocol, without the TensorFlow runtime.

What lives here: TF Serving's generated protobuf modules (``protos``) and the
one tensor codec (TensorProto <-> numpy) used by both the Labeler's client and
the model server.

May import: protobuf, grpc, numpy and ``rpc.errors``; never TensorFlow's runtime
or an app.
"""
