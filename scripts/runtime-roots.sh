#!/usr/bin/env bash
# Debian roots that match the images' runtimes, for `make test-runtime`.
#
#   scripts/runtime-roots.sh build      build or refresh the roots (root only)
#   scripts/runtime-roots.sh check      exit 0 if both roots are built and current
#   scripts/runtime-roots.sh exec NAME [--user UID:GID] -- CMD...
#                                       run CMD inside root NAME (trixie or forky)
#
# trixie: Debian 13, what python:3.13-slim is built on; python3 (3.13) and a
#         venv in /opt/venv with the app's pins and the test tools
#         (requirements-roots.lock, installed with --require-hashes).
# forky:  Debian testing; postgresql-18, valkey-server 9, prometheus 3
#         (promtool), prometheus-alertmanager (amtool), the backup scripts'
#         tools, podman/buildah/runc, and the same venv (its Python is 3.14).
#
# Roots live in .cache/roots/ (git-ignored). Each has a stamp recording the
# hash of this script and the lock file it installs, and the versions
# of the packages the tests rely on; a root is rebuilt when the hash changes.
# `exec` enters a root in a private mount namespace (/proc, /dev, /sys, /tmp
# and this repository bound at the same paths), so nothing stays mounted.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
roots=${RUNTIME_ROOTS_DIR:-$repo/.cache/roots}
script="$repo/scripts/runtime-roots.sh"
ROOT_NAMES=(trixie forky)
SYSTEM_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'runtime-roots: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# The Debian mirror this machine's apt already uses (not a new host).
mirror() {
  if [[ -n "${RUNTIME_ROOTS_MIRROR:-}" ]]; then
    echo "$RUNTIME_ROOTS_MIRROR"
    return
  fi
  local uri
  uri=$({ grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
          grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'; } |
        grep -E '/debian/?$' | head -n 1 || true)
  [[ -n "$uri" ]] || die "no Debian mirror in /etc/apt/sources.list*; set RUNTIME_ROOTS_MIRROR"
  echo "${uri%/}"
}

inputs_hash() {
  { sed -n '/^# >>> setup/,/^# <<< setup/p' "$script"; cat "$repo/requirements-roots.lock"; } |
    sha256sum | cut -d' ' -f1
}

stamp_of() { echo "$roots/$1.stamp"; }

is_current() {
  local stamp
  stamp=$(stamp_of "$1")
  [[ -f "$stamp" && -x "$roots/$1/opt/venv/bin/python" ]] &&
    [[ "$(head -n 1 "$stamp")" == "inputs $(inputs_hash)" ]]
}

# Refuse to delete a root that still has something mounted inside it.
remove_root() {
  local dir=$1
  [[ -e "$dir" ]] || return 0
  if findmnt -rno TARGET | grep -qF "$dir/"; then
    die "$dir has mounts inside; unmount them first"
  fi
  rm -rf --one-file-system "$dir"
}

# >>> setup: this part, and the requirement files, are hashed into each root's stamp
packages_of() {
  case $1 in
    trixie) echo "python3 python3-venv ca-certificates procps" ;;
    # postgresql-18 brings the matching client (pg_dump 18) for the backup tests;
    # podman, buildah and runc build and run the project's images
    # (scripts/runtime-images.sh); crun refuses this machine's cgroup layout.
    # gpg, gpg-agent and openssl make the stand-in hosts' keys and certificate
    # for the backup image's build (scripts/standin_hosts.py); git makes the
    # stand-in github.com repository for the Celery exporter's build and serves
    # it (git http-backend: its shallow fetch of a commit id needs smart HTTP).
    forky) echo "postgresql-18 valkey-server valkey-tools prometheus prometheus-alertmanager" \
                "python3 python3-venv ca-certificates procps rclone jq podman buildah runc" \
                "gpg gpg-agent openssl git" ;;
  esac
}

in_root() {  # in_root DIR CMD...: during the build (no repo bind needed)
  local dir=$1
  shift
  # shellcheck disable=SC2016 # expanded by the inner bash
  unshare --mount --propagation private -- bash -c '
    dir=$1; shift
    mount --bind /proc "$dir/proc"
    mount --rbind /dev "$dir/dev"
    exec chroot "$dir" /usr/bin/env -i PATH='"$SYSTEM_PATH"' HOME=/root LC_ALL=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive "$@"' in_root "$dir" "$@"
}

build_root() {
  local name=$1 dir="$roots/$1.new" suite=$1 mirror_uri
  mirror_uri=$(mirror)
  remove_root "$dir"
  mkdir -p "$roots"
  log "$name: debootstrap from $mirror_uri"
  local extra=()
  # This debootstrap may predate the testing suite's name; sid's script fits it.
  [[ -f "/usr/share/debootstrap/scripts/$suite" ]] || extra=(/usr/share/debootstrap/scripts/sid)
  debootstrap --variant=minbase "$suite" "$dir" "$mirror_uri" "${extra[@]}" >"$roots/$name.log" 2>&1 ||
    die "$name: debootstrap failed (see $roots/$name.log)"
  if [[ "$name" == forky ]]; then
    # The testing suite's Release file in this mirror is past its Valid-Until
    # date; accept that for this suite only. rclone has left testing: it
    # comes from trixie, the release the backup image is built on.
    printf 'deb [check-valid-until=no] %s %s main\ndeb %s trixie main\n' \
      "$mirror_uri" "$suite" "$mirror_uri" >"$dir/etc/apt/sources.list"
  else
    echo "deb $mirror_uri $suite main" >"$dir/etc/apt/sources.list"
  fi
  # No services start inside the root, and no cluster is created on install.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 0755 "$dir/usr/sbin/policy-rc.d"
  mkdir -p "$dir/etc/postgresql-common"
  echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.conf"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  # This machine's CA bundle, for pip (HTTPS may go through an intercepting proxy).
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/host-ca-bundle.crt"
  log "$name: apt-get install $(packages_of "$name")"
  if ! in_root "$dir" apt-get -qq update >>"$roots/$name.log" 2>&1; then
    die "$name: apt-get update failed (see $roots/$name.log)"
  fi
  # shellcheck disable=SC2046 # the package list is split on purpose
  if ! in_root "$dir" apt-get install -y -qq --no-install-recommends $(packages_of "$name") \
    >>"$roots/$name.log" 2>&1; then
    die "$name: apt-get install failed (see $roots/$name.log)"
  fi
  in_root "$dir" apt-get clean
  log "$name: venv /opt/venv"
  # The app's pins and the test tools, with the sha256 of every file
  # (scripts/lock_requirements.py): a file that differs from PyPI's fails.
  cp "$repo/requirements-roots.lock" "$dir/tmp/requirements.lock"
  in_root "$dir" python3 -m venv /opt/venv
  if ! in_root "$dir" /opt/venv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check \
    --cert /etc/host-ca-bundle.crt --require-hashes --only-binary=:all: --requirement /tmp/requirements.lock \
    >>"$roots/$name.log" 2>&1; then
    die "$name: pip install failed (see $roots/$name.log)"
  fi
  rm -f "$dir/tmp/requirements.lock"
  {
    echo "inputs $(inputs_hash)"
    echo "built $(date -u +%FT%TZ) from $mirror_uri $suite"
    # shellcheck disable=SC2016,SC2046 # a dpkg format string; one argument per package
    in_root "$dir" dpkg-query -W -f='${Package} ${Version}\n' $(packages_of "$name") libc6
    echo "python $(in_root "$dir" /opt/venv/bin/python -c 'import platform; print(platform.python_version())')"
  } >"$dir.stamp"
  remove_root "$roots/$name"
  mv "$dir" "$roots/$name"
  mv "$dir.stamp" "$(stamp_of "$name")"
  log "$name: done"
}
# <<< setup

cmd_build() {
  [[ $(id -u) -eq 0 ]] || die "building roots needs root (debootstrap, chroot)"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  # The roots build side by side: mostly downloads, so this saves minutes.
  local pids=() name failed=0
  for name in "${ROOT_NAMES[@]}"; do
    is_current "$name" && continue
    build_root "$name" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  ((failed == 0)) || die "build failed"
  for name in "${ROOT_NAMES[@]}"; do
    sed -n '3,$p' "$(stamp_of "$name")" | sed "s/^/  $name: /" >&2
  done
}

cmd_check() {
  for name in "${ROOT_NAMES[@]}"; do
    is_current "$name" || { echo "runtime root $name is missing or stale (run: sudo scripts/runtime-roots.sh build)"; exit 1; }
  done
}

cmd_exec() {
  local name=${1:?root name}
  shift
  local user=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --user) user=$2; shift 2 ;;
      --) shift; break ;;
      *) die "exec: unexpected $1" ;;
    esac
  done
  local dir="$roots/$name"
  [[ -x "$dir/opt/venv/bin/python" ]] || die "root $name is not built (run: scripts/runtime-roots.sh build)"
  # unshare execs bash, which execs chroot, env and CMD: CMD keeps this PID,
  # so the caller's signals reach it directly.
  # shellcheck disable=SC2016 # expanded by the inner bash
  exec unshare --mount --propagation private -- bash -c '
    dir=$1 repo=$2 user=$3; shift 3
    # The root becomes a mount point, so unshare (nested) and runc inside work.
    mount --bind "$dir" "$dir"
    mount --bind /proc "$dir/proc"
    mount --rbind /dev "$dir/dev"
    mount --rbind /sys "$dir/sys"
    mount --bind /tmp "$dir/tmp"
    mkdir -p "$dir$repo"
    mount --bind "$repo" "$dir$repo"
    cwd=$PWD
    [[ -d "$dir$cwd" ]] || cwd=/
    exec chroot ${user:+--userspec="$user"} "$dir" /usr/bin/env --chdir="$cwd" PATH="$PATH:'"$SYSTEM_PATH"'" "$@"
  ' enter "$dir" "$repo" "$user" "$@"
}

case ${1:-} in
  build) cmd_build ;;
  check) cmd_check ;;
  exec) shift; cmd_exec "$@" ;;
  *) echo "usage: $0 build | check | exec NAME [--user UID:GID] -- CMD..." >&2; exit 2 ;;
esac
