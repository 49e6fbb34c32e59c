# conduct-gateway image: `docker compose up` builds it (see docker-compose.yml).
# Pinned by version (Python 3.11.14 on Debian 12); bump deliberately, with the constraints file.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY gateway ./gateway
# Exact dependency versions (constraints.txt, made by `bash scripts/lock`): the same image every build.
RUN pip install -c constraints.txt . && rm -rf /src

# An unprivileged user owns the state (spool, users file, generated certificate); named volumes
# mounted on these folders start with this ownership. conduct-gateway-accounts holds the users file
# several gateways share (docker-compose.yml's `ha` profile).
RUN useradd --system --uid 10001 --home-dir /var/lib/conduct-gateway --shell /usr/sbin/nologin gateway \
    && mkdir -p /etc/conduct-gateway/config /var/lib/conduct-gateway/spool /var/lib/conduct-gateway-accounts \
    && chown -R gateway:gateway /var/lib/conduct-gateway /var/lib/conduct-gateway-accounts \
    && chmod 700 /var/lib/conduct-gateway /var/lib/conduct-gateway-accounts

# The same layout as the repository, so the sample's relative policy path (../policies) holds. The
# policy is the shipped example until a policy of your own is mounted over it (docker-compose.yml).
COPY config/gateway.yaml /etc/conduct-gateway/config/gateway.yaml
COPY policies/schema.json /etc/conduct-gateway/policies/schema.json
COPY gateway/data/default-policy.yaml /etc/conduct-gateway/policies/default.yaml

USER gateway
WORKDIR /var/lib/conduct-gateway
# Inside a container the listeners must take connections from outside it: publish their ports on the
# host's loopback (as docker-compose.yml does) or behind a firewall.
ENV CONDUCT_GATEWAY_CONFIG=/etc/conduct-gateway/config/gateway.yaml \
    CONDUCT_GATEWAY_SERVER__SUBMISSION__HOST=0.0.0.0 \
    CONDUCT_GATEWAY_SERVER__SUBMISSIONS__HOST=0.0.0.0 \
    CONDUCT_GATEWAY_STATE_DIR=/var/lib/conduct-gateway \
    CONDUCT_GATEWAY_AUTH__USERS_FILE=/var/lib/conduct-gateway/users.passwd

# 2587 STARTTLS submission, 2465 implicit-TLS submission, 9587 /metrics and /healthz.
EXPOSE 2587 2465 9587
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9587/healthz', timeout=4)"]
ENTRYPOINT ["conduct-gateway"]
CMD ["serve"]
