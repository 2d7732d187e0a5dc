#!/usr/bin/env bash
# Idempotent set-up on a fresh machine (Debian, Python >= 3.11, Node >= 20).
#   scripts/setup.sh synth   Python venv + cdk8s CLI: enough to render
#   scripts/setup.sh validate  also the test libraries (make validate runs the policy tests)
#   scripts/setup.sh test    also the servers and tools the tests run for real
# Each step is skipped when its inputs have not changed since the last run.
set -euo pipefail

cd "$(dirname "$0")/.."
mode="${1:-synth}"
stamps=.setup
mkdir -p "$stamps"

log() { printf 'setup: %s\n' "$*" >&2; }

# Runs "$@" unless the stamp for these input files is current.
step() {
  local name=$1 inputs=$2
  shift 2
  local digest
  # shellcheck disable=SC2086 # inputs is a list of file names
  digest=$({ cat $inputs 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamps/$name" && "$(cat "$stamps/$name")" == "$digest" ]]; then
    return 0
  fi
  log "$name"
  "$@"
  echo "$digest" >"$stamps/$name"
}

python_bin() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  log "Python >= 3.11 is required"
  exit 1
}

# Installs a lock file written by scripts/lock_requirements.py: every package
# pinned with the sha256 of its files on PyPI, wheels only, so a dependency
# missing from the lock or a file that differs from PyPI's fails the step.
venv() {
  local dir=$1 lock=$2
  [[ -x "$dir/bin/python" ]] || "$(python_bin)" -m venv "$dir"
  # grep drops pip's notes about this machine's local wheel directories.
  "$dir/bin/pip" install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
    --requirement "$lock" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}

apt_packages() {
  # PostgreSQL, Redis, promtool, amtool and Alertmanager, rclone, jq, shellcheck and skopeo run for real
  # in the tests; debootstrap builds the runtime roots.
  local packages=(postgresql redis-server prometheus prometheus-alertmanager rclone shellcheck jq skopeo
                  debootstrap)
  local missing=()
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
    exit 1
  fi
  local lock=(-o DPkg::Lock::Timeout=300)
  apt-get "${lock[@]}" update -qq
  # The distribution's postgresql service is not used: tests start their own.
  DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# Debian roots with the images' runtimes (Python 3.13, PostgreSQL 18, Valkey 9,
# Prometheus 3) for the runtime tests. The builder keeps its own stamp and is a
# no-op when current. Without root the tests skip; in CI a failed build fails.
runtime_roots() {
  if [[ $(id -u) -ne 0 ]]; then
    log "runtime roots need root: the runtime tests will skip"
    return 0
  fi
  bash scripts/runtime-roots.sh build && return 0
  [[ -z "${CI:-}" ]] || exit 1
  log "runtime roots not built: the runtime tests will skip"
}

command -v node >/dev/null || { log "Node.js >= 20 is required (22+ recommended)"; exit 1; }

step python-synth "requirements.lock" venv .venv requirements.lock
step node "package.json package-lock.json" npm ci --no-audit --no-fund --loglevel=error
# Bytecode at both optimisation levels (`cdk8s synth` runs python -O, which reads
# *.opt-1.pyc; pip writes only *.pyc). Where PYTHONDONTWRITEBYTECODE is set (CI
# images, many containers) Python would compile imports/ (5 MB) and every module a
# render imports on each synth (~1.2 s); it still reads bytecode that exists, so
# write it once here: all of imports/, then what a render of env/ imports.
precompile() {
  .venv/bin/python -m compileall -q -o 0 -o 1 imports
  .venv/bin/python scripts/precompile.py
}
step bytecode "imports/SOURCE.json requirements.lock scripts/precompile.py" precompile

roots=
if [[ "$mode" == test ]]; then
  step apt "scripts/setup.sh" apt_packages
  # The roots are mostly downloads and unpacking: build them while pip works.
  runtime_roots &
  roots=$!
fi
if [[ "$mode" == test || "$mode" == validate ]]; then
  step python-test "requirements-dev.lock" venv .venv requirements-dev.lock
fi
if [[ "$mode" == test ]]; then
  step checkov "requirements-checkov.lock" venv .venv-checkov requirements-checkov.lock
  wait "$roots"
fi
