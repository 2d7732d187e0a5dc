#!/usr/bin/env bash
# The project's images, built here with podman inside the forky root of
# scripts/runtime-roots.sh (Debian testing's podman 5, buildah 1.43, runc).
#
#   scripts/runtime-images.sh build [app|backup|celery-exporter]
#                                                  stand-in bases, then app/ as localhost/vibearena-app:test,
#                                                  backup/ as localhost/vibearena-backup:test and celery-exporter/
#                                                  as localhost/vibearena-celery-exporter:test (default all three)
#   scripts/runtime-images.sh backup-build FLAGS...
#   scripts/runtime-images.sh exporter-build FLAGS...
#                                                  podman build of backup/ or celery-exporter/ against the
#                                                  stand-in hosts, with FLAGS added (the tests' refused builds:
#                                                  --target, --build-arg)
#   scripts/runtime-images.sh podman ARGS...       podman with the flags this machine needs
#
# No registry is reachable, so the bases named in the Dockerfiles' FROM are
# stand-ins made from the trixie root (Debian 13, what both upstream bases are)
# and tagged with those exact names, so every Dockerfile step really runs:
#
# - python:3.13.x-slim (app/, celery-exporter/): the root with `python` linked
#   to Debian's python3 (in /usr/bin, not a source build in /usr/local), this
#   machine's CA bundle for pip, and the stand-in hosts' test CA in the system
#   bundle (for git over HTTPS in celery-exporter/). The build runs the venv,
#   pip install of the pinned requirements, the non-root user, compileall,
#   collectstatic.
# - debian:trixie-slim (backup/): the root with the packages the roots add
#   (python3, ca-certificates, procps) purged, plus the stand-in hosts' test CA
#   in /usr/local/share/ca-certificates, which the image's own
#   `apt-get install ca-certificates` then trusts.
#
# backup/Dockerfile downloads from hosts that are unreachable here: the rclone
# release (downloads.rclone.org, rclone.org/KEYS) and postgresql-client-18
# from apt.postgresql.org. Its build reaches local stand-ins for them instead
# (scripts/standin_hosts.py, generated into .cache/backup-standins, never
# committed) through `--add-host NAME:$STANDIN_ADDRESS`: a release zip of
# Debian's rclone with a SHA256SUMS clearsigned by a throwaway key, and a
# signed `trixie-pgdg` repository with forky's postgresql-client-18. The
# Dockerfile is built as it is (in Docker's image format, as `docker build`
# does); only its build args name the throwaway keys (RCLONE_VERSION,
# RCLONE_KEY_FINGERPRINT, PGDG_KEY_URL, PGDG_KEY_FINGERPRINT), and every
# signature, checksum, fingerprint and version check runs. The backup image
# carries the test CA in its CA bundle; it is for the tests only.
#
# celery-exporter/Dockerfile fetches github.com/danihodovic/celery-exporter at
# a pinned commit with git. github.com is a stand-in too (same script, same
# address): a generated repository with a synthetic stand-in exporter, served
# with git's smart HTTP protocol; the only build arg is EXPORTER_COMMIT, the
# stand-in's commit id (the repository URL stays the default). The images
# built from the python stand-in (app, exporter) carry the test CA as well.
#
# Each stand-in base, the backup image and the exporter image carry a label
# with the hash of their inputs and are rebuilt only when it changes; the app
# image is rebuilt by podman's layer cache. Builds take a lock
# (.cache/runtime-images.lock): the tests' workers (pytest-xdist) ask for the
# same images at once, and the stand-in hosts hold one address.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
roots="${RUNTIME_ROOTS_DIR:-$repo/.cache/roots}"
APP_IMAGE=localhost/vibearena-app:test
BACKUP_IMAGE=localhost/vibearena-backup:test
EXPORTER_IMAGE=localhost/vibearena-celery-exporter:test
IMPORTED=localhost/trixie-root:stand-in
# Every image built here carries the hash of its inputs under this label.
INPUTS_LABEL=vibearena.runtime-images.inputs
STANDINS="$repo/.cache/backup-standins"
# A loopback address of its own, so ports 80 and 443 are free for the stand-in hosts.
STANDIN_ADDRESS=${STANDIN_ADDRESS:-127.0.83.1}
BACKUP_HOSTS=(downloads.rclone.org rclone.org apt.postgresql.org)
EXPORTER_HOSTS=(github.com)
export PODMAN_IGNORE_CGROUPSV1_WARNING=1

log() { printf 'runtime-images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

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

inputs_of() {  # the inputs label of an image, empty if it is missing
  podman image inspect --format "{{ index .Labels \"$INPUTS_LABEL\" }}" "$1" 2>/dev/null || true
}

# The trixie root as an image: only the distribution (no test venv, no kernel
# filesystems, no apt lists).
trixie_import() {
  local stamp
  stamp=$(sha256sum "$roots/trixie.stamp" | cut -d' ' -f1)
  [[ "$(inputs_of "$IMPORTED")" == "$stamp" ]] && return 0
  log "import the trixie root as $IMPORTED"
  tar -C "$roots/trixie" --exclude=./opt/venv --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
    --exclude='./tmp/*' --exclude='./work' --exclude='./var/lib/apt/lists/*' -c . |
    podman import --change "LABEL $INPUTS_LABEL=$stamp" - "$IMPORTED" >/dev/null
}

# standin_build NAME DIR: build DIR/Containerfile (FROM $IMPORTED) as NAME,
# unless NAME was built from the same root and the same files in DIR.
standin_build() {
  local name=$1 dir=$2 stamp
  stamp=$({ cat "$roots/trixie.stamp"; (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum); } |
    sha256sum | cut -d' ' -f1)
  [[ "$(inputs_of "$name")" == "$stamp" ]] && return 0
  trixie_import
  log "stand-in $name from the trixie root"
  # shellcheck disable=SC2046 # limits prints separate flags
  podman build --quiet --pull=never --network=host $(limits) --label "$INPUTS_LABEL=$stamp" -t "$name" "$dir" \
    >/dev/null
}

python_base() {  # python_base DIR: the one python:X.Y.Z-slim base of DIR/Dockerfile
  local base
  base=$(sed -nE 's/^FROM (python:[0-9.]+-slim)( .*)?$/\1/p' "$repo/$1/Dockerfile" | sort -u)
  [[ $(wc -l <<<"$base") -eq 1 && -n "$base" ]] || die "$1/Dockerfile: expected one python:X.Y.Z-slim base"
  echo "docker.io/library/$base"
}

python_standin() {  # python_standin DIR: the stand-in for DIR/Dockerfile's base
  local base work
  base=$(python_base "$1")
  standin_material
  work=$(mktemp -d)
  cp "$STANDINS/tls/ca.crt" "$work/standin-hosts-ca.crt"
  # python:3.13-slim already has ca-certificates (as this root has), so an
  # image's own `apt-get install ca-certificates` changes nothing: the
  # stand-in hosts' CA goes into the system bundle here, for git and curl.
  cat >"$work/Containerfile" <<EOF
FROM $IMPORTED
COPY standin-hosts-ca.crt /usr/local/share/ca-certificates/
RUN ln -sf /usr/bin/python3 /usr/local/bin/python && update-ca-certificates >/dev/null
ENV LANG=C.UTF-8 PIP_CERT=/etc/host-ca-bundle.crt
CMD ["python3"]
EOF
  standin_build "$base" "$work"
  rm -rf "$work"
}

debian_standin() {
  local base work
  base=$(sed -nE 's/^ARG DEBIAN_IMAGE=(debian:[a-z]+-slim)$/\1/p' "$repo/backup/Dockerfile")
  [[ "$base" == debian:trixie-slim ]] ||
    die "backup/Dockerfile: expected ARG DEBIAN_IMAGE=debian:trixie-slim, found '$base'"
  work=$(mktemp -d)
  cp "$STANDINS/tls/ca.crt" "$work/standin-hosts-ca.crt"
  # debian:trixie-slim has none of what the roots add (python3, ca-certificates,
  # procps) and no CA bundle; the stand-in hosts' CA waits where the image's own
  # ca-certificates install picks it up.
  cat >"$work/Containerfile" <<EOF
FROM $IMPORTED
RUN apt-get purge -y -qq --auto-remove python3 python3-venv ca-certificates procps >/dev/null && \\
    rm -rf /etc/host-ca-bundle.crt /etc/ssl/certs /var/cache/apt/*.bin && \\
    mkdir -p /usr/local/share/ca-certificates
COPY standin-hosts-ca.crt /usr/local/share/ca-certificates/
CMD ["bash"]
EOF
  standin_build "docker.io/library/$base" "$work"
  rm -rf "$work"
}

# The stand-in hosts' files, made in the forky root (its rclone binary and its
# postgresql-client-18), made again when the root or the generator changes.
standin_material() {
  local stamp
  stamp=$(cat "$roots/forky.stamp" "$repo/scripts/standin_hosts.py" | sha256sum | cut -d' ' -f1)
  [[ -f "$STANDINS/stamp" && "$(cat "$STANDINS/stamp")" == "$stamp" ]] && return 0
  log "stand-in hosts ${BACKUP_HOSTS[*]} ${EXPORTER_HOSTS[*]}: files in $STANDINS"
  rm -rf "$STANDINS"
  "$repo/scripts/runtime-roots.sh" exec forky -- /usr/bin/python3 "$repo/scripts/standin_hosts.py" make "$STANDINS"
  echo "$stamp" >"$STANDINS/stamp"
}

port_taken() { (exec 3<>"/dev/tcp/$STANDIN_ADDRESS/$1") 2>/dev/null; }

# Serve the stand-in hosts until this script exits (once: later calls find them serving).
standin_serve() {
  local port
  [[ -n "${standin_pid:-}" ]] && kill -0 "$standin_pid" 2>/dev/null && return 0
  for port in 80 443; do
    ! port_taken "$port" || die "$STANDIN_ADDRESS:$port is taken; set STANDIN_ADDRESS to another 127.x.y.z"
  done
  : >"$STANDINS/serve.log"
  # Without the build lock's descriptor: a server orphaned by a killed build
  # must not hold the lock.
  "$repo/scripts/runtime-roots.sh" exec forky -- /usr/bin/python3 "$repo/scripts/standin_hosts.py" serve \
    "$STANDINS" "$STANDIN_ADDRESS" 2>"$STANDINS/serve.err" {lock_fd}>&- &
  standin_pid=$!
  trap 'kill "$standin_pid" 2>/dev/null || true; wait "$standin_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    port_taken 443 && port_taken 80 && return 0
    kill -0 "$standin_pid" 2>/dev/null || break
    sleep 0.1
  done
  die "the stand-in hosts did not start: $(tail -n 3 "$STANDINS/serve.err")"
}

# hosted_build CONTEXT ARGS_FILE HOST... -- FLAGS...: podman build of CONTEXT/
# with each HOST resolving to the stand-in hosts and ARGS_FILE's build args,
# then FLAGS (later flags win). Docker's image format, as `docker build` makes:
# the OCI format drops SHELL, and the Dockerfiles' pipelines rely on its pipefail.
hosted_build() {
  local context=$1 args_file=$2 args=() line
  shift 2
  while [[ $1 != -- ]]; do
    args+=(--add-host "$1:$STANDIN_ADDRESS")
    shift
  done
  shift
  standin_serve
  while IFS= read -r line; do
    args+=(--build-arg "$line")
  done <"$args_file"
  # shellcheck disable=SC2046 # limits prints separate flags
  podman build --format=docker --pull=never --network=host $(limits) "${args[@]}" "$@" "$repo/$context"
}

# podman build of backup/ against the stand-in hosts, then FLAGS.
backup_build() {
  "$repo/scripts/runtime-roots.sh" check >/dev/null
  standin_material
  debian_standin
  hosted_build backup "$STANDINS/build-args" "${BACKUP_HOSTS[@]}" -- "$@"
}

# podman build of celery-exporter/ against the stand-in github.com, then FLAGS.
# The stand-in's commit id is the only build arg.
exporter_build() {
  "$repo/scripts/runtime-roots.sh" check >/dev/null
  python_standin celery-exporter
  hosted_build celery-exporter "$STANDINS/exporter-build-args" "${EXPORTER_HOSTS[@]}" -- "$@"
}

build_app() {
  python_standin app
  log "podman build app/ -> $APP_IMAGE"
  # shellcheck disable=SC2046 # limits prints separate flags
  podman build --pull=never --network=host $(limits) -t "$APP_IMAGE" "$repo/app"
}

# unless_current IMAGE BASE CONTEXT ARGS_FILE BUILDER: BUILDER -t IMAGE, unless
# IMAGE was built from the same base image, stand-in files, build args and CONTEXT/.
unless_current() {
  local image=$1 base=$2 context=$3 args_file=$4 builder=$5 stamp
  stamp=$({ podman image inspect --format '{{ .Id }}' "$base"; cat "$STANDINS/stamp" "$args_file"
            (cd "$repo/$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum); } |
          sha256sum | cut -d' ' -f1)
  if [[ "$(inputs_of "$image")" == "$stamp" ]]; then
    log "$image is current"
    return 0
  fi
  log "podman build $context/ -> $image (stand-in hosts on $STANDIN_ADDRESS)"
  "$builder" --label "$INPUTS_LABEL=$stamp" -t "$image"
}

build_backup() {
  standin_material
  debian_standin
  unless_current "$BACKUP_IMAGE" docker.io/library/debian:trixie-slim backup "$STANDINS/build-args" backup_build
}

build_exporter() {
  python_standin celery-exporter
  unless_current "$EXPORTER_IMAGE" "$(python_base celery-exporter)" celery-exporter \
    "$STANDINS/exporter-build-args" exporter_build
}

cmd_build() {
  "$repo/scripts/runtime-roots.sh" check >/dev/null
  case ${1:-all} in
    app) build_app ;;
    backup) build_backup ;;
    celery-exporter) build_exporter ;;
    all) build_app; build_backup; build_exporter ;;
    *) die "build: unknown image $1 (app, backup or celery-exporter)" ;;
  esac
}

# One build at a time; a second caller waits, then finds the images current.
lock_builds() {
  mkdir -p "$repo/.cache"
  exec {lock_fd}>"$repo/.cache/runtime-images.lock"
  flock "$lock_fd"
}

case ${1:-} in
  build) shift; lock_builds; cmd_build "$@" ;;
  backup-build) shift; lock_builds; backup_build "$@" ;;
  exporter-build) shift; lock_builds; exporter_build "$@" ;;
  podman) shift; podman "$@" ;;
  *) echo "usage: $0 build [app|backup|celery-exporter] | backup-build FLAGS... | exporter-build FLAGS..." \
       "| podman ARGS..." >&2; exit 2 ;;
esac
