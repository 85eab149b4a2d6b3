# syntax=docker/dockerfile:1
# Multi-stage: build on Debian 12 with the project's own dependency script,
# run on a slim Debian 12 with only the runtime libraries, as a non-root user.
# scripts/image.sh builds it with podman (and makes the Debian base images
# locally when no registry is reachable): `scripts/image.sh build`.

ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh --build
COPY . .
# The ccache directory is a build volume when scripts/image.sh provides one.
RUN CCACHE_DIR=/ccache cmake --preset release -DEGRESSD_TESTS=OFF -DEGRESSD_BENCH=OFF \
 && CCACHE_DIR=/ccache cmake --build --preset release --target egressd \
 && strip build/release/gateway/egressd

FROM ${RUNTIME_IMAGE}
# iptables and iproute2: the node-rule scripts that the node-agents and
# tproxy-egress-nodes overlays run from this image (init step and preStop).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libyaml-cpp0.7 libc-ares2 libidn2-0 libspdlog1.10 libfmt9 libboost-json1.81.0 \
      libnghttp2-14 libssl3 libjemalloc2 iptables iproute2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 10001 egressd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin egressd
COPY --from=build /src/build/release/gateway/egressd /usr/local/bin/egressd
COPY k8s/scripts/egressd-node-rules.sh /usr/local/sbin/egressd-node-rules
COPY k8s/scripts/egressd-tproxy-rules.sh /usr/local/sbin/egressd-tproxy-rules
COPY config/egressd.yaml /etc/egressd/egressd.yaml
# Non-root; the root filesystem can be read-only (the access log goes to
# stdout or a mounted volume; nothing else is written).
USER 10001:10001
# Listener (redirect 15001; tproxy, explicit and PROXY-protocol listeners as
# configured) and admin (/metrics /healthz /readyz).
EXPOSE 15001 15008 3128 9901
ENTRYPOINT ["/usr/local/bin/egressd"]
CMD ["--config", "/etc/egressd/egressd.yaml"]
