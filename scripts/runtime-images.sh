#!/usr/bin/env bash
# The project's images, built here with podman inside the forky root of
# scripts/runtime-roots.sh (Debian testing's podman 5, buildah 1.43, runc).
#
#   scripts/runtime-images.sh build            stand-in base, then app/ as localhost/vibearena-app:test
#   scripts/runtime-images.sh podman ARGS...   podman with the flags this machine needs
#
# No registry is reachable, so the base named in app/Dockerfile's FROM
# (python:3.13.x-slim) is a stand-in: the trixie root (python:3.13-slim is
# Debian trixie) imported as an image and tagged with that exact name, so every
# Dockerfile step really runs (venv, pip install of the pinned requirements,
# the non-root user, compileall, collectstatic). Differences from the real
# base: Debian's python3 (/usr/bin, `python` linked in /usr/local/bin) instead
# of a source build in /usr/local, and this machine's CA bundle for pip.
#
# backup/Dockerfile is not built: its rclone stage downloads the release from
# rclone's server and its final stage installs postgresql-client-18 from
# apt.postgresql.org, neither reachable here (checked: `curl: (6) Could not
# resolve host` at the rclone download). Its scripts run with pg_dump 18 in
# the forky root instead (tests/test_runtime.py).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
roots="${RUNTIME_ROOTS_DIR:-$repo/.cache/roots}"
APP_IMAGE=localhost/vibearena-app:test
IMPORTED=localhost/trixie-root:stand-in
STAMP_LABEL=vibearena.runtime-roots.trixie-stamp
export PODMAN_IGNORE_CGROUPSV1_WARNING=1

log() { printf 'runtime-images: %s\n' "$*" >&2; }

# This machine: cgroup v1 without systemd (cgroupfs), no journald, and crun
# refuses the hybrid cgroup layout, so runc.
podman() {
  "$repo/scripts/runtime-roots.sh" exec forky -- podman --cgroup-manager=cgroupfs --events-backend=file \
    --runtime=runc "$@"
}

# Build steps fail with "error setting rlimits" unless limits are explicit.
limits() {
  echo --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=$(ulimit -Hu):$(ulimit -Hu)"
}

standin() {
  local base stamp current work
  base=$(sed -nE 's/^FROM (python:[0-9.]+-slim)( .*)?$/\1/p' "$repo/app/Dockerfile" | sort -u)
  [[ $(wc -l <<<"$base") -eq 1 && -n "$base" ]] || { log "app/Dockerfile: expected one python:X.Y.Z-slim base"; exit 1; }
  stamp=$(sha256sum "$roots/trixie.stamp" | cut -d' ' -f1)
  current=$(podman image inspect --format "{{ index .Labels \"$STAMP_LABEL\" }}" "docker.io/library/$base" \
    2>/dev/null || true)
  if [[ "$current" == "$stamp" ]]; then
    return 0
  fi
  log "stand-in docker.io/library/$base from the trixie root"
  # Only the distribution: no test venv, no kernel filesystems, no apt lists.
  tar -C "$roots/trixie" --exclude=./opt/venv --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
    --exclude='./tmp/*' --exclude='./work' --exclude='./var/lib/apt/lists/*' -c . |
    podman import --change "LABEL $STAMP_LABEL=$stamp" - "$IMPORTED" >/dev/null
  work=$(mktemp -d)
  cat >"$work/Containerfile" <<EOF
FROM $IMPORTED
RUN ln -sf /usr/bin/python3 /usr/local/bin/python
ENV LANG=C.UTF-8 PIP_CERT=/etc/host-ca-bundle.crt
CMD ["python3"]
EOF
  # shellcheck disable=SC2046 # limits prints separate flags
  podman build --quiet --pull=never --network=host $(limits) -t "docker.io/library/$base" "$work" >/dev/null
  rm -rf "$work"
}

cmd_build() {
  "$repo/scripts/runtime-roots.sh" check >/dev/null
  standin
  log "podman build app/ -> $APP_IMAGE"
  # shellcheck disable=SC2046 # limits prints separate flags
  podman build --pull=never --network=host $(limits) -t "$APP_IMAGE" "$repo/app"
}

case ${1:-} in
  build) cmd_build ;;
  podman) shift; podman "$@" ;;
  *) echo "usage: $0 build | podman ARGS..." >&2; exit 2 ;;
esac
