# The Stovepipe server with every backend in the source tree installed.
#   docker build -t stovepipe .
#   docker run -p 50051:50051 -v "$PWD:/srv/repo:ro" -w /srv/repo stovepipe
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
