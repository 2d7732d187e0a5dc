#!/usr/bin/env bash
# Delete the local kind cluster and everything in it (make down).
# Kept: your .env (its generated passwords), certs/ (the dev CA) and the app
# source; Postgres and object-store data lived in the cluster and are gone.
set -euo pipefail

CLUSTER=vibearena

die() { printf 'down: error: %s\n' "$*" >&2; exit 1; }

command -v kind >/dev/null || die "kind is not installed, so there is no kind cluster to delete"
docker info >/dev/null 2>&1 ||
  die "the Docker engine is not running ('docker info' failed); start it to reach the kind cluster"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  printf '==> no kind cluster named %s; nothing to do\n' "$CLUSTER" >&2
  exit 0
fi
printf '==> deleting kind cluster %s\n' "$CLUSTER" >&2
kind delete cluster --name "$CLUSTER"
