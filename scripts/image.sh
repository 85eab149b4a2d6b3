#!/usr/bin/env bash
# Builds the egressd container image with podman, and starts it.
#
#   scripts/image.sh build    the Debian 12 base images (made locally with
#                             debootstrap when they are missing: no registry
#                             is needed), then the Dockerfile -> egressd:VERSION
#   scripts/image.sh run ARGS podman run of the image with the hardening it
#                             ships with (non-root, read-only root filesystem,
#                             no capabilities, no new privileges); ARGS go to
#                             egressd. PODMAN_RUN_OPTS adds podman options.
#   scripts/image.sh size     the image's size in bytes
#   scripts/image.sh prune    removes the image, its build cache and the bases
#
# Environment: IMAGE (default egressd:$(version)), STORAGE_DRIVER (podman's,
# default: podman's own, vfs where overlay does not work), CCACHE_DIR (a host
# directory for the build stage's ccache; default ~/.cache/egressd-image-ccache).
#
# The test `image.smoke` (test/integration/test_image.py) runs a real flow
# through the image in the integration world; see README "Container image".
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -nE 's/^project\(egressd VERSION ([0-9.]+).*/\1/p' CMakeLists.txt)
IMAGE=${IMAGE:-egressd:$version}
BUILD_BASE=localhost/egressd-base:bookworm
RUNTIME_BASE=localhost/egressd-base:bookworm-slim
CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/egressd-image-ccache}

podman_opts=()
[[ -z "${STORAGE_DRIVER:-}" ]] || podman_opts=(--storage-driver "$STORAGE_DRIVER")
podman_() { podman "${podman_opts[@]}" "$@"; }

# The Debian mirror this machine's apt uses (never written into the repo).
apt_mirror() {
  local uri
  uri=$(sed -nE 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -v security | head -1 || true)
  if [[ -z "$uri" ]]; then
    uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [[ -n "$uri" ]] || { echo "image.sh: no Debian mirror found in the apt sources" >&2; exit 1; }
  echo "$uri"
}

# Makes the two base images from one debootstrap when they are missing:
# bookworm (minbase, for the build stage) and bookworm-slim (the same, less
# documentation, locales and apt lists, for the runtime stage).
ensure_bases() {
  if podman_ image exists "$BUILD_BASE" && podman_ image exists "$RUNTIME_BASE"; then
    return
  fi
  command -v debootstrap >/dev/null || { echo "image.sh: debootstrap is missing (scripts/install-deps.sh --image)" >&2; exit 1; }
  local root
  root=$(mktemp -d /tmp/egressd-base.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  echo "image.sh: debootstrap bookworm (minbase)"
  debootstrap --variant=minbase bookworm "$root" "$(apt_mirror)" >"$root.log" 2>&1 ||
    { tail -20 "$root.log"; exit 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman_ import --change 'CMD ["/bin/bash"]' - "$BUILD_BASE" >/dev/null
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | podman_ import --change 'CMD ["/bin/bash"]' - "$RUNTIME_BASE" >/dev/null
}

case "${1:-}" in
  build)
    ensure_bases
    mkdir -p "$CCACHE_DIR"
    podman_ build --isolation chroot --layers \
      --build-arg BUILD_IMAGE="$BUILD_BASE" --build-arg RUNTIME_IMAGE="$RUNTIME_BASE" \
      --volume "$CCACHE_DIR:/ccache" -t "$IMAGE" -f Dockerfile .
    # The build stage's layers are cache only: keep the runtime image.
    podman_ image prune -f >/dev/null || true
    echo "image.sh: built $IMAGE ($(podman_ image inspect --format '{{.Size}}' "$IMAGE") bytes)"
    ;;
  run)
    shift
    # runc and these rlimits are what podman needs on these machines
    # (../shared/platform-notes.md); the rest is the shipped hardening.
    # shellcheck disable=SC2086
    # exec: signals (SIGTERM to drain) reach podman, which passes them on.
    exec podman "${podman_opts[@]}" run --rm --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
      --read-only --cap-drop ALL --security-opt no-new-privileges --user 10001:10001 \
      ${PODMAN_RUN_OPTS:-} "$IMAGE" "$@"
    ;;
  size)
    podman_ image inspect --format '{{.Size}}' "$IMAGE"
    ;;
  prune)
    podman_ rmi -f "$IMAGE" "$BUILD_BASE" "$RUNTIME_BASE" >/dev/null 2>&1 || true
    podman_ image prune -a -f >/dev/null || true
    ;;
  *)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
