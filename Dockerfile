# syntax=docker/dockerfile:1
# One image for every hpo role in docker-compose.yml (study creation, workers, dashboard) and for
# workers on other hosts or in Kubernetes (deploy/k8s-job.yaml).
#
#   docker build -t hpo .                                  # CPU torch (default, about 1 GB)
#   docker build -t hpo:cuda --build-arg TORCH_VARIANT=cu128 .   # a CUDA build of torch
#
# TORCH_VARIANT names a wheel index of download.pytorch.org (cpu, or a CUDA variant that the
# pinned TORCH_VERSION is published for). CUDA wheels bundle their CUDA runtime, so the same slim
# base works on a GPU host with the NVIDIA container toolkit; only the driver comes from the host.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first and from its own index: the default PyPI wheel is the CUDA one (several GB), and a
# layer of its own survives rebuilds after code changes.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY hpo ./hpo
# torch is already satisfied, so this pulls only the pure-Python dependencies from PyPI.
RUN pip install . && python -c "import hpo.cli, torch; print('torch', torch.__version__)"

# Study files ship in the image; docker-compose.yml also mounts ./studies over them so that a new
# or edited study file needs no rebuild.
COPY studies ./studies

# Run as an unprivileged user. /artifacts is created here, owned by that user, so that a named
# volume mounted there starts out writable (Docker copies the ownership into a new volume).
RUN useradd --create-home --uid 10001 hpo \
    && mkdir -p /artifacts \
    && chown hpo:hpo /artifacts
USER hpo
ENV HPO_ARTIFACTS=/artifacts \
    HPO_THREADS=1

# No ENTRYPOINT: compose and Kubernetes give the full command (`hpo worker NAME`, ...), which
# is exactly what tests/test_compose.py runs as local processes.
CMD ["hpo", "--help"]
