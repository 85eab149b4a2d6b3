# syntax=docker/dockerfile:1
# Multi-stage: build on Debian 12 with the project's own dependency script,
# run on a slim Debian 12 with only the runtime libraries, as a non-root user.

FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh --build
COPY . .
RUN cmake --preset release -DEGRESSD_TESTS=OFF -DEGRESSD_BENCH=OFF \
 && cmake --build --preset release --target egressd \
 && strip build/release/gateway/egressd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libyaml-cpp0.7 libc-ares2 libidn2-0 libspdlog1.10 libfmt9 libboost-json1.81.0 \
      libnghttp2-14 libssl3 libjemalloc2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin egressd
COPY --from=build /src/build/release/gateway/egressd /usr/local/bin/egressd
COPY config/egressd.yaml /etc/egressd/egressd.yaml
USER 10001
# Listener (redirect 15001; tproxy, explicit and PROXY-protocol listeners as
# configured) and admin (/metrics /healthz /readyz).
EXPOSE 15001 15008 3128 9901
ENTRYPOINT ["/usr/local/bin/egressd", "--config", "/etc/egressd/egressd.yaml"]
