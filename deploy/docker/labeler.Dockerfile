# syntax=docker/dockerfile:1
# The Labeler image: the labeler package, gRPC, numpy and TF Serving's API
# protos, without the TensorFlow runtime (about 240 MB instead of about 2 GB).
# Build from the repository root:
#   docker build -f deploy/docker/labeler.Dockerfile -t text-labeler/labeler:0.1.0 .
# Base images are pinned to an exact release; pin the digest as well in your
# registry mirror if you need bit-for-bit rebuilds (docker buildx imagetools inspect).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# 1. TensorFlow's generated protobuf modules, cut out of the TensorFlow wheel.
#    The wheel is only downloaded here; the final image gets ~0.4 MB of it.
FROM ${PYTHON_IMAGE} AS tf-protos
ARG TENSORFLOW_VERSION=2.21.0
RUN pip download --no-cache-dir --no-deps --only-binary=:all: \
      --platform manylinux_2_17_x86_64 --python-version 3.11 \
      --dest /wheels "tensorflow-cpu==${TENSORFLOW_VERSION}"
COPY deploy/docker/tf_protos.py /tmp/tf_protos.py
RUN python /tmp/tf_protos.py /wheels/tensorflow_cpu-${TENSORFLOW_VERSION}-*.whl /out

# 2. A virtual environment with the Labeler and its dependencies.
FROM ${PYTHON_IMAGE} AS build
ARG TENSORFLOW_SERVING_API_VERSION=2.21.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY deploy/docker/labeler-requirements.txt /tmp/labeler-requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/labeler-requirements.txt \
 && /opt/venv/bin/pip install --no-deps "tensorflow-serving-api==${TENSORFLOW_SERVING_API_VERSION}"
COPY --from=tf-protos /out/tensorflow /opt/venv/lib/python3.11/site-packages/tensorflow
COPY pyproject.toml README.md /src/
COPY labeler /src/labeler
COPY rpc /src/rpc
COPY modelspec /src/modelspec
COPY tfserving /src/tfserving
# --no-deps: pyproject.toml lists TensorFlow for the Trainer and model server.
RUN /opt/venv/bin/pip install --no-deps /src \
 && /opt/venv/bin/python -c "import labeler.server, rpc.healthcheck, tfserving.protos" \
 && ! /opt/venv/bin/python -c "import tensorflow.python" 2>/dev/null

# 3. The runtime image.
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin labeler
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
# Compose and Kubernetes mount deploy/labeler.textproto at the path in CMD and
# set LABELER_DEFAULT_TARGET and LABELER_MODEL_ROOT (/var/models, where they
# mount the model repository); without them its relative model_root
# "var/models" resolves against / to the same place.
WORKDIR /
USER 10001
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "rpc.healthcheck", "localhost:50051"]
ENTRYPOINT ["labeler"]
CMD ["serve", "--config", "/etc/text-labeler/labeler.textproto", "--host", "0.0.0.0", "--port", "50051"]
