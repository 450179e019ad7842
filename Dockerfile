# PACS-lite image: the README's own install steps (scripts/setup-python), then `pacs-lite serve`.
FROM debian:bookworm-slim
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/pacs-lite
COPY . .
RUN scripts/setup-python postgres
# Data (SQLite index and filesystem store, when used) lives in a volume.
WORKDIR /var/lib/pacs-lite
VOLUME /var/lib/pacs-lite
# Inside a container the listeners bind all interfaces. DICOM then admits only the
# [[dicom.peers]] of the configuration (allow_any_caller = "auto"); HTTP answers loopback
# clients only until the security feature (tokens) is configured.
ENV PACS_LITE_DICOM_HOST=0.0.0.0 PACS_LITE_HTTP_HOST=0.0.0.0
EXPOSE 11112 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/pacs-lite/.venv/bin/pacs-lite"]
CMD ["serve"]
