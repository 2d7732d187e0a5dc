#!/usr/bin/env bash
# Bring the local dev stack up on kind, or converge it when it is already up.
#
# usage: kind/up.sh [STEP...]          (make up runs `make synth` first)
#   Without steps, runs them all in this order:
#     prereqs    docker, kind, kubectl, helm, openssl and a running Docker engine
#     cluster    create the kind cluster from kind/cluster.yaml unless it exists
#     ingress    F5 NGINX Ingress Controller (Helm chart, pinned) on ports 80/443
#     certmanager cert-manager (pinned release manifest)
#     images     docker build app/ and backup/, then `kind load` them
#     source     the app-source PersistentVolume for the auto-reloading API
#     namespace  the rendered Namespace, so the Secrets can go in first
#     secrets    the app Secret from .env (scripts/dev-secrets.sh)
#     certs      the Ingress' TLS Secret (scripts/dev-certs.sh)
#     apply      kubectl apply --server-side -f dist/dev (re-runs one-shot Jobs)
#     migrate    wait for the migration Job
#     smoke      scripts/smoke.py: every workload ready, then HTTPS through the Ingress
#   Environment: SKIP_INGRESS=1, SKIP_CERT_MANAGER=1, SKIP_SMOKE=1 skip those
#   steps; UP_TIMEOUT (seconds, default 600) bounds each wait.
#
# Every kubectl and helm call goes to the kind cluster through its own
# kubeconfig, never to whatever context is current in ~/.kube/config.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# Pinned versions (tests/test_kind.py checks them against kind/ and images.md).
KIND_VERSION=v0.33.0
CLUSTER=vibearena
NODE_IMAGE=kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5
NGINX_INGRESS_CHART=oci://ghcr.io/nginx/charts/nginx-ingress
NGINX_INGRESS_CHART_VERSION=2.6.4 # appVersion 5.5.4
CERT_MANAGER_VERSION=v1.21.1
CERT_MANAGER_URL="https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
ENV_NAME=dev
TIMEOUT=${UP_TIMEOUT:-600}
PYTHON=.venv/bin/python
ALL_STEPS=(prereqs cluster ingress certmanager images source namespace secrets certs apply migrate smoke)

if [[ -t 2 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
log() { printf '%s==> %s%s\n' "$bold" "$*" "$plain" >&2; }
info() { printf '    %s\n' "$*" >&2; }
warn() { printf 'up: warning: %s\n' "$*" >&2; }
die() { printf 'up: error: %s\n' "$*" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

devenv() { "$PYTHON" kind/devenv.py "$@" "$ENV_NAME"; }

need() {
  command -v "$1" >/dev/null || die "$1 is not installed. $2"
}

step_prereqs() {
  log "checking prerequisites"
  need docker "Install Docker: https://docs.docker.com/get-docker/"
  need kind "Install kind $KIND_VERSION: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
  need helm "Install Helm 3.19+: https://helm.sh/docs/intro/install/"
  need openssl "Install openssl (or mkcert) for the dev TLS certificate."
  docker info >/dev/null 2>&1 ||
    die "the Docker engine is not running or not reachable ('docker info' failed). Start Docker Desktop, or 'sudo systemctl start docker', and check that your user may use it."
  local version
  version=$(kind version 2>/dev/null | awk '{print $2}')
  [[ "$version" == "$KIND_VERSION" ]] ||
    warn "kind $version found; the pinned node image is built for kind $KIND_VERSION"
  [[ -x "$PYTHON" ]] || die "$PYTHON is missing: run 'make setup' (make up does it for you)"
  compgen -G "dist/$ENV_NAME/*.yaml" >/dev/null || die "dist/$ENV_NAME is empty: run 'make synth' first"
  info "docker, kind $version, kubectl, helm, openssl: ok"
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

# Points KUBECONFIG at the kind cluster only, for this script and its children.
use_cluster() {
  cluster_exists || die "no kind cluster named $CLUSTER: run 'make up'"
  kind get kubeconfig --name "$CLUSTER" >"$scratch/kubeconfig"
  export KUBECONFIG="$scratch/kubeconfig"
}

step_cluster() {
  log "kind cluster $CLUSTER"
  if cluster_exists; then
    local image
    image=$(docker inspect --format '{{.Config.Image}}' "$CLUSTER-control-plane" 2>/dev/null || true)
    info "exists (node image ${image:-unknown})"
    [[ -z "$image" || "$image" == "$NODE_IMAGE" ]] ||
      warn "the cluster runs $image, not $NODE_IMAGE; 'make down && make up' recreates it"
  else
    kind create cluster --config kind/cluster.yaml --wait 180s
  fi
  use_cluster
  kubectl wait --for=condition=Ready node --all --timeout="${TIMEOUT}s" >/dev/null
}

step_ingress() {
  if [[ "${SKIP_INGRESS:-}" == 1 ]]; then
    log "ingress controller: skipped (SKIP_INGRESS=1)"
    return
  fi
  local edge controller namespace release
  edge=$(devenv edge) || die "cannot install the ingress controller for this profile (see above)"
  read -r controller namespace release <<<"$edge"
  log "F5 NGINX Ingress Controller (chart $NGINX_INGRESS_CHART_VERSION) in $namespace"
  devenv ingress-values >"$scratch/ingress-values.yaml"
  # upgrade --install converges: same values and version change nothing.
  helm upgrade --install "$release" "$NGINX_INGRESS_CHART" --version "$NGINX_INGRESS_CHART_VERSION" \
    --namespace "$namespace" --create-namespace --values "$scratch/ingress-values.yaml" \
    --wait --timeout "${TIMEOUT}s"
  devenv ingress-metrics | kubectl apply --server-side -f - >/dev/null
  info "$controller ready; metrics Service nginx-ingress-metrics.$namespace (port 9113)"
}

step_certmanager() {
  if [[ "${SKIP_CERT_MANAGER:-}" == 1 ]]; then
    log "cert-manager: skipped (SKIP_CERT_MANAGER=1)"
    return
  fi
  log "cert-manager $CERT_MANAGER_VERSION"
  # Server-side: the CRDs are too large for the last-applied annotation.
  kubectl apply --server-side --force-conflicts -f "$CERT_MANAGER_URL" >/dev/null
  local deployment
  for deployment in cert-manager cert-manager-cainjector cert-manager-webhook; do
    kubectl -n cert-manager rollout status "deployment/$deployment" --timeout="${TIMEOUT}s" >/dev/null
  done
  info "ready"
}

step_images() {
  log "building and loading our images"
  local images context ref
  images=$(devenv images) || die "cannot tell which images dist/$ENV_NAME uses (see above)"
  [[ -n "$images" ]] || die "dist/$ENV_NAME uses none of our images; is it rendered from env/$ENV_NAME.yaml?"
  while read -r context ref; do
    [[ -f "$context/Dockerfile" ]] || die "$context/Dockerfile is missing: cannot build $ref"
    info "docker build -t $ref $context"
    docker build -t "$ref" "$context"
    # The profile's tag and imagePullPolicy IfNotPresent make the pods use this copy.
    kind load docker-image --name "$CLUSTER" "$ref" >/dev/null
    info "loaded $ref into $CLUSTER"
  done <<<"$images"
}

step_source() {
  log "app source volume (for api.dev_reload)"
  local pv=vibearena-app-source phase
  kubectl apply --server-side -f kind/app-source-pv.yaml >/dev/null
  phase=$(kubectl get pv "$pv" -o jsonpath='{.status.phase}')
  if [[ "$phase" == Released ]]; then
    # Its claim was deleted (namespace recreated); forget the old claim's uid
    # so the new claim of the same name binds. The source itself is untouched.
    kubectl patch pv "$pv" --type merge -p '{"spec":{"claimRef":{"uid":null,"resourceVersion":null}}}' >/dev/null
    phase=Available
  fi
  info "PersistentVolume $pv: $phase (host app/ via the node's /vibearena/app)"
}

step_namespace() {
  log "namespace $(devenv namespace)"
  # The rendered Namespace itself, so the Secrets have a home before the rest.
  devenv namespace-object | kubectl apply --server-side -f - >/dev/null
}

step_secrets() {
  log "app Secret from .env (scripts/dev-secrets.sh)"
  bash scripts/dev-secrets.sh --namespace "$(devenv namespace)"
}

step_certs() {
  log "TLS Secret for $(devenv domain) (scripts/dev-certs.sh)"
  bash scripts/dev-certs.sh --namespace "$(devenv namespace)"
}

step_apply() {
  local namespace jobs
  namespace=$(devenv namespace)
  log "applying dist/$ENV_NAME"
  # Rendered Jobs are one-shot and their pod template is immutable; deleting
  # them first lets a re-run apply a changed Job and re-run migrations for a
  # rebuilt image with the same tag.
  jobs=$(devenv jobs)
  if [[ -n "$jobs" ]]; then
    # shellcheck disable=SC2086 # one Job name per word
    kubectl -n "$namespace" delete job $jobs --ignore-not-found --wait=true >/dev/null
  fi
  kubectl apply --server-side -f "dist/$ENV_NAME" | sed 's/^/    /' >&2
}

step_migrate() {
  local job
  job=$(devenv migration-job-name)
  log "waiting for the migration Job $job"
  # smoke.py reports why (pod state, events, last log lines) if it fails.
  "$PYTHON" scripts/smoke.py --env "$ENV_NAME" --job "$job" --timeout "$TIMEOUT" ||
    die "the migration Job $job did not complete; fix it and run 'make migrate'"
}

step_smoke() {
  if [[ "${SKIP_SMOKE:-}" == 1 ]]; then
    log "smoke check: skipped (SKIP_SMOKE=1)"
    return
  fi
  log "smoke check"
  "$PYTHON" scripts/smoke.py --env "$ENV_NAME" --timeout "$TIMEOUT"
}

main() {
  local steps=("$@") step
  ((${#steps[@]})) || steps=("${ALL_STEPS[@]}")
  for step in "${steps[@]}"; do
    [[ " ${ALL_STEPS[*]} " == *" $step "* ]] || die "unknown step '$step' (steps: ${ALL_STEPS[*]})"
  done
  for step in "${steps[@]}"; do
    # Every step after prereqs talks to the cluster.
    if [[ "$step" != prereqs && "$step" != cluster && -z "${KUBECONFIG_SET:-}" ]]; then
      use_cluster
      KUBECONFIG_SET=1
    fi
    "step_$step"
    [[ "$step" != cluster ]] || KUBECONFIG_SET=1
  done
  if (($# == 0)); then
    log "up: https://$(devenv domain)/api/ (CA: $(cat certs/ca-file 2>/dev/null || echo certs/ca.crt); mkcert: run 'mkcert -install')"
  fi
}

main "$@"
