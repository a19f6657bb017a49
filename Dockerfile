# hl7engine in a container: the config is mounted at /config, the data (SQLite store, journals,
# the lock and pid files) lives in the /data volume. See docs/deployment.md.
#   docker build -t hl7engine .
#   docker run -v ./channels.yaml:/config/channels.yaml:ro -v hl7data:/data -p 2575:2575 -p 8080:8080 hl7engine
# The config sets engine.data_dir: /data and binds its listeners and engine.http on 0.0.0.0.
FROM python:3.11-slim

RUN useradd --system --create-home --home-dir /home/hl7engine hl7engine \
    && mkdir -p /data /config && chown hl7engine:hl7engine /data
WORKDIR /opt/hl7engine
COPY pyproject.toml README.md LICENSE ./
COPY engine ./engine
COPY twisted ./twisted
RUN pip install --no-cache-dir . && rm -rf /opt/hl7engine/engine /opt/hl7engine/twisted

USER hl7engine
WORKDIR /data
VOLUME ["/data"]
# SIGTERM stops the engine cleanly: listeners close, in-flight messages finish, the store closes.
STOPSIGNAL SIGTERM
# Asks /readyz where the config's engine.http listens (any port; exit 1 when not ready).
HEALTHCHECK --interval=30s --timeout=5s \
    CMD ["hl7engine", "healthcheck", "-c", "/config/channels.yaml", "--timeout", "2"]
CMD ["hl7engine", "run", "-c", "/config/channels.yaml"]
