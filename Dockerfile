# syntax=docker/dockerfile:1
# Build stage: compile the release binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY config ./config
COPY proto ./proto
# `tracegate --version` names this commit: docker build --build-arg TRACEGATE_GIT_COMMIT=$(git describe --always) .
ARG TRACEGATE_GIT_COMMIT=unknown
RUN cargo build --release --locked && strip target/release/tracegate

# Runtime stage: a small Debian with CA roots, a non-root user and the default configuration.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tracegate --create-home tracegate
COPY --from=build /src/target/release/tracegate /usr/local/bin/tracegate
COPY config/tracegate.yaml /etc/tracegate/tracegate.yaml
# Inside a container the listeners must face the container network. The default configuration
# reads these variables; it has no authentication, so publish the ports on loopback only
# (docker run -p 127.0.0.1:4317:4317 ...) or use a configuration from config/examples/ (which
# require JWTs). Without the acknowledgement tracegate refuses to listen beyond loopback
# unauthenticated.
ENV TRACEGATE_ALLOW_UNAUTHENTICATED_NON_LOOPBACK=true \
    TRACEGATE_GRPC_ENDPOINT=0.0.0.0:4317 \
    TRACEGATE_HTTP_ENDPOINT=0.0.0.0:4318 \
    TRACEGATE_API_ENDPOINT=0.0.0.0:8080 \
    TRACEGATE_DATA_DIR=/var/lib/tracegate/data
USER tracegate
WORKDIR /var/lib/tracegate
EXPOSE 4317 4318 8080
ENTRYPOINT ["/usr/local/bin/tracegate"]
CMD ["run", "--config", "/etc/tracegate/tracegate.yaml"]
