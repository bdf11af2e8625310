# syntax=docker/dockerfile:1
# The Trainer image: the Trainer, the model server and `.[trainer,modelserver]`
# from pyproject.toml (TensorFlow). It runs the Trainer and its training jobs,
# and can also run labeler-modelserver, the embedded TF-Serving-compatible
# model server, where the real TF Serving is not wanted. Build from the
# repository root:
#   docker build -f deploy/docker/trainer.Dockerfile -t text-labeler/trainer:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# 1. TF Serving's protobuf and gRPC modules (tfserving/generated): the same
#    stage as in labeler.Dockerfile.
FROM ${PYTHON_IMAGE} AS tfs-protos
ARG TENSORFLOW_VERSION=2.21.0
ARG TENSORFLOW_SERVING_API_VERSION=2.21.0
ARG GRPC_VERSION=1.85.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "grpcio-tools==${GRPC_VERSION}" \
 && pip download --no-deps --only-binary=:all: \
      --platform manylinux_2_17_x86_64 --python-version 3.11 --dest /wheels \
      "tensorflow-serving-api==${TENSORFLOW_SERVING_API_VERSION}" "tensorflow-cpu==${TENSORFLOW_VERSION}"
COPY scripts/gen_tfs_protos.py /tmp/gen_tfs_protos.py
RUN python /tmp/gen_tfs_protos.py --out /out/generated \
      --source /wheels/tensorflow_serving_api-${TENSORFLOW_SERVING_API_VERSION}-*.whl \
      --source /wheels/tensorflow_cpu-${TENSORFLOW_VERSION}-*.whl

# 2. A virtual environment with the two apps and their extras.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY pyproject.toml README.md /src/
COPY trainer /src/trainer
COPY modelserver /src/modelserver
COPY rpc /src/rpc
COPY modelspec /src/modelspec
COPY tfserving /src/tfserving
COPY --from=tfs-protos /out/generated /src/tfserving/generated
RUN /opt/venv/bin/pip install "/src[trainer,modelserver,ray]" \
 && TF_CPP_MIN_LOG_LEVEL=2 /opt/venv/bin/python -c "import trainer.server, modelserver.server, trainer.recipes.fasttext"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin trainer \
 && mkdir -p /var/models /var/lib/text-labeler \
 && chown 10001:10001 /var/models /var/lib/text-labeler
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /
USER 10001
EXPOSE 50052
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "rpc.healthcheck", "localhost:50052", "--service", "trainer.v1.Trainer"]
ENTRYPOINT ["trainer"]
CMD ["serve", "--host", "0.0.0.0", "--port", "50052", "--model-root", "/var/models", \
     "--data-root", "/var/lib/text-labeler/data", "--state-dir", "/var/lib/text-labeler/state"]
