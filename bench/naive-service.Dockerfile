# Baseline for bench/images.py: how a service image is often written: one stage, the build
# toolchain left in, the whole build context copied, dependencies installed in place.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG SERVICE
ARG PACKAGE
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y build-essential python3-dev python3-pip python3-venv
COPY . /app
RUN python3 -m venv /venv \
    && /venv/bin/pip install --no-index --find-links /app/build/wheels -r /app/services/requirements.txt
ENV PYTHONPATH=/app/services/lib:/app/services/${SERVICE} SERVICE_PACKAGE=${PACKAGE}
CMD ["sh", "-c", "exec /venv/bin/python -m $SERVICE_PACKAGE serve"]
