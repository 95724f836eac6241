# syntax=docker/dockerfile:1
# An OpenRTC worker image: `docker build --build-arg AGENTS=path/to/agents -t your-agents:v1 .`
# Build stage installs into a virtualenv; the runtime stage copies only that and your
# agents, bakes every model file in (`openrtc download-files`), and runs as a non-root
# user. No secret is ever copied or passed as a build argument: LiveKit keys, the
# membership secret and the admin token reach the pod at run time (env or mounted files).

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install .
ARG AGENTS=examples/agents
COPY ${AGENTS} /app/agents
# The root filesystem is read-only at run time: compile now, Python cannot later.
RUN python -m compileall -q /app/agents

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 openrtc \
 && useradd --system --uid 10001 --gid openrtc --home-dir /home/openrtc --create-home openrtc
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/agents /app/agents
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/opt/openrtc/models
RUN mkdir -p /opt/openrtc/models && chown openrtc:openrtc /opt/openrtc/models
USER 10001:10001
# Load the models that ship in the wheels (Silero VAD, the end-of-turn model) and fetch
# whatever your agents' plugins need, into the image: a pod never downloads at start.
RUN openrtc download-files /app/agents
# ...and nothing may try to at run time.
ENV HF_HUB_OFFLINE=1
WORKDIR /app
EXPOSE 8081
# openrtc drains on SIGTERM: live calls finish, then it exits. Exec form below makes
# openrtc PID 1, so the signal reaches it with no shell in between.
STOPSIGNAL SIGTERM
ENTRYPOINT ["openrtc"]
CMD ["start", "/app/agents"]
