# PACS-lite image, two stages. The build stage makes the wheel of this checkout and a wheelhouse of its
# dependencies; the runtime stage installs them the way README.md's "Running it in production" does
# (a virtualenv and `pip install` of the wheel) and runs `pacs-lite serve` as the unprivileged user `pacs`.
#   docker build -t pacs-lite:0.1.0 .
#   docker run -p 11112:11112 -p 8080:8080 -v pacs-data:/var/lib/pacs-lite pacs-lite:0.1.0
FROM debian:bookworm-slim AS build
# behind a TLS-inspecting proxy or with a private index: --build-arg PIP_CERT=... / PIP_INDEX_URL=...
ARG PIP_CERT
ARG PIP_INDEX_URL
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN python3 -m venv /build-venv \
    && /build-venv/bin/pip wheel -q --wheel-dir /wheels .

FROM debian:bookworm-slim
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/pacs-lite --shell /usr/sbin/nologin pacs
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/pacs-lite \
    && /opt/pacs-lite/bin/pip install -q --no-index --find-links /wheels pacs-lite \
    && ln -s /opt/pacs-lite/bin/pacs-lite /usr/local/bin/pacs-lite
COPY config/pacs-lite.toml /etc/pacs-lite/pacs-lite.toml.example
# Data (SQLite index and filesystem store, when used) lives in a volume owned by `pacs`.
RUN mkdir -p /var/lib/pacs-lite && chown pacs:pacs /var/lib/pacs-lite
WORKDIR /var/lib/pacs-lite
VOLUME /var/lib/pacs-lite
# Inside a container the listeners bind all interfaces. DICOM then admits only the [[dicom.peers]] of the
# configuration (allow_any_caller = "auto"); HTTP admits loopback clients, the networks of [http] allow_from and
# partner tokens, and `serve` refuses to start while neither allow_from nor a token exists.
ENV PACS_LITE_DICOM_HOST=0.0.0.0 PACS_LITE_HTTP_HOST=0.0.0.0
EXPOSE 11112 8080
USER pacs
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PACS_LITE_HTTP_PORT', '8080'), timeout=5)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pacs-lite"]
CMD ["serve"]
