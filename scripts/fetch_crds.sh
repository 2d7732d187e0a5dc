#!/usr/bin/env bash
# Download the pinned upstream CRD files that imports/ and the tests use, for
# machines without ../shared/crds. Each file comes from the commit its release
# tag points to and must match the SHA-256 in scripts/crd-pins.txt; a file
# that does not is not kept. `make test` calls this (through scripts/crds.py)
# when no verified copy exists.
#
# usage: scripts/fetch_crds.sh [DIR]     (default .cache/crds, where the tests look)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/.cache/crds}"

command -v curl >/dev/null || { echo "fetch_crds: curl is required" >&2; exit 2; }
while IFS='|' read -r local repo commit path expected; do
  [[ -n "$local" && "$local" != \#* ]] || continue
  target="$dest/$local"
  if [[ -f "$target" ]] && [[ "$(sha256sum "$target" | cut -d' ' -f1)" == "$expected" ]]; then
    continue
  fi
  mkdir -p "$(dirname "$target")"
  url="https://raw.githubusercontent.com/$repo/$commit/$path"
  if ! curl -fsSL --retry 3 --connect-timeout 15 --max-time 300 -o "$target.part" "$url"; then
    rm -f "$target.part"
    echo "fetch_crds: cannot download $url" >&2
    exit 1
  fi
  actual=$(sha256sum "$target.part" | cut -d' ' -f1)
  if [[ "$actual" != "$expected" ]]; then
    rm -f "$target.part"
    echo "fetch_crds: $local: checksum $actual, expected $expected" >&2
    exit 1
  fi
  mv "$target.part" "$target"
  echo "fetch_crds: $local" >&2
done <"$root/scripts/crd-pins.txt"
