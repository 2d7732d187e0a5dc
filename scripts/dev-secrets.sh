#!/usr/bin/env bash
# Create (or update) the dev Secret in the cluster from a local .env file.
#
# Keys come from env/dev.example.env; values from the .env file. A blank
# required value gets a strong random one, which is written back to the .env
# file (mode 600) so that re-runs keep the same passwords: Postgres keeps the
# password it was initialised with on its volume. Optional keys (marked in the
# example file) stay blank. Values are never printed.
#
# usage: scripts/dev-secrets.sh [--env-file .env] [--namespace NS] [--name NAME] [--dry-run]
#   --dry-run   print the Secret manifest to stdout instead of applying it
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
env_file=.env
example="$root/env/dev.example.env"
namespace=$(sed -n 's/^namespace: *//p' "$root/env/dev.yaml")
name=vibearena-secrets
dry_run=false

die() { printf 'dev-secrets: %s\n' "$*" >&2; exit 2; }

while (($#)); do
  case "$1" in
    --env-file) env_file=${2:?--env-file needs a path}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a name}; shift 2 ;;
    --name) name=${2:?--name needs a name}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

command -v kubectl >/dev/null || die "kubectl is required"
command -v openssl >/dev/null || die "openssl is required"
[[ -f "$env_file" ]] || { cp "$example" "$env_file"; printf 'dev-secrets: created %s from %s\n' "$env_file" "${example#"$root"/}" >&2; }
chmod 600 "$env_file"

# Keys and whether they are optional, from the example file: a comment line
# starting with "Optional" right above a key marks it optional.
mapfile -t keys < <(grep -E '^[A-Z][A-Z0-9_]*=' "$example" | cut -d= -f1)
optional_keys=" $(grep -B1 -E '^[A-Z][A-Z0-9_]*=' "$example" | grep -A1 -E '^# Optional' |
  grep -E '^[A-Z]' | cut -d= -f1 | tr '\n' ' ') "

value_of() {
  # Last assignment wins, as in a shell; strip one level of matching quotes.
  local raw
  raw=$(grep -E "^$1=" "$env_file" | tail -n1 | cut -d= -f2-) || true
  raw=${raw%\"}; raw=${raw#\"}; raw=${raw%\'}; raw=${raw#\'}
  printf '%s' "$raw"
}

# set_value KEY VALUE: replace KEY's line(s) in the env file, or append one.
# Shell builtins only (read, printf): a value on the command line of sed or
# any other process would show in /proc/<pid>/cmdline to every local user.
set_value() {
  local line found=false tmp
  tmp=$(mktemp "$env_file.XXXXXX")
  chmod 600 "$tmp"
  while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" == "$1="* ]]; then
      printf '%s=%s\n' "$1" "$2"
      found=true
    else
      printf '%s\n' "$line"
    fi
  done <"$env_file" >"$tmp"
  $found || printf '%s=%s\n' "$1" "$2" >>"$tmp"
  mv "$tmp" "$env_file"
}

secret_env=$(mktemp)
trap 'rm -f "$secret_env"' EXIT
generated=0
for key in "${keys[@]}"; do
  value=$(value_of "$key")
  if [[ -z "$value" && "$optional_keys" != *" $key "* ]]; then
    # Hex keeps generated values safe inside URLs (DATABASE_URL, REDIS_URL).
    value=$(openssl rand -hex 32)
    set_value "$key" "$value"
    generated=$((generated + 1))
  fi
  printf '%s=%s\n' "$key" "$value" >>"$secret_env"
done
((generated == 0)) || printf 'dev-secrets: generated %d value(s) into %s\n' "$generated" "$env_file" >&2

manifest=$(kubectl create secret generic "$name" --namespace "$namespace" \
  --from-env-file="$secret_env" --dry-run=client -o yaml)
if $dry_run; then
  printf '%s\n' "$manifest"
else
  printf '%s\n' "$manifest" | kubectl apply -f - >/dev/null
  printf 'dev-secrets: applied secret %s/%s (%d keys)\n' "$namespace" "$name" "${#keys[@]}" >&2
fi
