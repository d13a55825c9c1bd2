# The Stovepipe server with every backend in the source tree installed.
#   docker build -t stovepipe .
#   docker run -p 127.0.0.1:50051:50051 -v "$PWD:/srv/repo:ro" -w /srv/repo stovepipe
# It listens on every interface of the container, so serve TLS and require tokens whenever
# the port is reachable from elsewhere (the server warns at start when neither is set):
#   docker run -p 50051:50051 -v "$PWD:/srv/repo:ro" -w /srv/repo \
#     -v /etc/stovepipe/secrets:/run/secrets/stovepipe:ro \
#     -e STOVEPIPE_TLS_CERT=/run/secrets/stovepipe/server.crt \
#     -e STOVEPIPE_TLS_KEY=/run/secrets/stovepipe/server.key \
#     -e STOVEPIPE_TLS_CLIENT_CA=/run/secrets/stovepipe/ca.crt \
#     -e STOVEPIPE_TOKENS_FILE=/run/secrets/stovepipe/tokens \
#     -e STOVEPIPE_REFLECTION=false \
#     stovepipe
# The files must be readable by uid 10001. Metrics stay off unless STOVEPIPE_METRICS_LISTEN
# is set; a port alone binds loopback, which only the container itself reaches.
FROM python:3.12.8-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STOVEPIPE_LISTEN=0.0.0.0:50051 \
    STOVEPIPE_STORAGE_URL=sqlite:////data/stovepipe.db

COPY . /src
# The command build runner checks commits out with git. Repositories are mounted from the
# host, owned by another user: /etc/gitconfig trusts them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir /src \
    && for backend in /src/backends/*/; do \
         if [ -f "${backend}pyproject.toml" ]; then pip install --no-cache-dir "$backend"; fi; \
       done \
    && rm -rf /src \
    && printf '[safe]\n\tdirectory = *\n' > /etc/gitconfig \
    && useradd --system --uid 10001 --home-dir /data --create-home stovepipe

USER stovepipe
WORKDIR /data
VOLUME ["/data"]
EXPOSE 50051 9464
ENTRYPOINT ["stovepipe"]
CMD ["serve"]
