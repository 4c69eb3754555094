# Oversight: a transparent PostgreSQL access proxy.
#
#   docker build -t oversight .
#   docker run -p 6432:6432 -p 9187:9187 \
#     -e OVERSIGHT_UPSTREAM=postgresql://oversight:secret@warehouse:5432/dwh \
#     -e OVERSIGHT_ADMIN_TOKEN=... \
#     -v "$PWD/rules:/etc/oversight/rules:ro" -v oversight-audit:/var/log/oversight \
#     oversight
#
# Rules and the audit log live on volumes: the rules so a DBA edits them
# without rebuilding (they reload on change), the audit log so it outlives
# the container.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs: no tests, no git history, no local settings.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# proxy/demo_rules is a link to rules/: the build resolves it into the package.
COPY rules ./rules
RUN pip install . \
    && rm -rf /src

RUN groupadd --system --gid 10001 oversight \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/oversight \
        --shell /usr/sbin/nologin oversight \
    && mkdir -p /etc/oversight/rules /var/log/oversight \
    && chown oversight:oversight /var/log/oversight
# The example rules, so the image starts; mount your own over them.
COPY rules/ /etc/oversight/rules/

# Inside a container, loopback is unreachable from outside, so listen on all
# interfaces. The dashboard and its API still need OVERSIGHT_ADMIN_TOKEN;
# /metrics, /healthz and /readyz are open, as scrapers expect.
ENV OVERSIGHT_LISTEN=0.0.0.0:6432 \
    OVERSIGHT_RULES=/etc/oversight/rules \
    OVERSIGHT_AUDIT_LOG=/var/log/oversight/audit.jsonl \
    OVERSIGHT_ADMIN_LISTEN=0.0.0.0:9187

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/oversight
VOLUME ["/etc/oversight/rules", "/var/log/oversight"]
EXPOSE 6432 9187

# No curl in a slim image: ask /healthz with the Python that is already here,
# at the port the proxy's own settings give (environment or oversight.toml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; from proxy.settings import load_settings; port = load_settings().admin_address[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["oversight"]
CMD ["serve"]
