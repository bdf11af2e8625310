# syntax=docker/dockerfile:1
# The Trainer image: the whole project with TensorFlow (CPU). It runs the
# Trainer and its training jobs, and can also run labeler-modelserver, the
# embedded TF-Serving-compatible model server, where the real TF Serving is
# not wanted. Build from the repository root:
#   docker build -f deploy/docker/trainer.Dockerfile -t text-labeler/trainer:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TENSORFLOW_SERVING_API_VERSION=2.21.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY deploy/docker/trainer-requirements.txt /tmp/trainer-requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/trainer-requirements.txt \
 && /opt/venv/bin/pip install --no-deps "tensorflow-serving-api==${TENSORFLOW_SERVING_API_VERSION}"
COPY pyproject.toml README.md /src/
COPY trainer /src/trainer
COPY modelserver /src/modelserver
COPY rpc /src/rpc
COPY modelspec /src/modelspec
COPY tfserving /src/tfserving
# --no-deps: pyproject.toml names tensorflow; the image has tensorflow-cpu.
RUN /opt/venv/bin/pip install --no-deps /src \
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
