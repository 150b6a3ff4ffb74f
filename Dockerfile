# syntax=docker/dockerfile:1
# phone-detector service image: dependencies installed exactly as uv.lock pins them, run as
# a non-root user, health-checked on /healthz. Build: docker build -t phone-detector .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# Same uv as the Makefile's UV_VERSION, so the lock file is read the same way.
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies before the code, so editing app/ does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
# --no-editable: the venv must not point back into /src, which the final image does not have.
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 detector \
    && useradd --system --uid 10001 --gid detector --create-home --home-dir /home/detector detector \
    && install -d -o detector -g detector /var/cache/phone-detector
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PHONE_DET_MODEL_CACHE_DIR=/var/cache/phone-detector
USER detector
WORKDIR /home/detector
EXPOSE 8000
# Models fetched or built at start are kept here; mount a volume to keep them across restarts.
VOLUME ["/var/cache/phone-detector"]
# The slim image has no curl; the standard library is enough for a liveness probe. The start
# period covers the first start, when the model may still be fetched or built.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["phone-detector"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
