#!/usr/bin/env bash
# Download the pinned upstream CRD files that imports/ and the tests use, for
# machines without ../shared/crds. Each file is fetched from the commit its
# release tag points to and checked against the SHA-256 in imports/SOURCE.json.
#
# usage: scripts/fetch_crds.sh [DIR]     (default ../shared/crds)
# then:  VIBEARENA_CRDS_DIR=DIR make imports   or   VIBEARENA_CRDS_DIR=DIR make test
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/../shared/crds}"

# local path | repository | commit (release tag) | path in the repository
pins="
cert-manager/cert-manager.io_clusterissuers.yaml|cert-manager/cert-manager|24e33194fb39488eff2bbf10c6dc640f407cad44|deploy/crds/cert-manager.io_clusterissuers.yaml
external-secrets/external-secrets.io_externalsecrets.yaml|external-secrets/external-secrets|378bdb622ed9712ef4a58370f6a17af033b7d343|config/crds/bases/external-secrets.io_externalsecrets.yaml
gateway-api/gateway.networking.k8s.io_httproutes.yaml|kubernetes-sigs/gateway-api|8bb74df00e56ec8f944d48c25e6c1c9c2f6848e3|config/crd/standard/gateway.networking.k8s.io_httproutes.yaml
traefik/traefik.io_middlewares.yaml|traefik/traefik-helm-chart|a8a66d0098703627b2cf352c66b1725c196a734a|traefik/crds/traefik.io_middlewares.yaml
prometheus-operator/monitoring.coreos.com_servicemonitors.yaml|prometheus-operator/prometheus-operator|f8fafd475f3d132e239432ae6172de60a6cb6516|example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
prometheus-operator/monitoring.coreos.com_podmonitors.yaml|prometheus-operator/prometheus-operator|f8fafd475f3d132e239432ae6172de60a6cb6516|example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
prometheus-operator/monitoring.coreos.com_prometheusrules.yaml|prometheus-operator/prometheus-operator|f8fafd475f3d132e239432ae6172de60a6cb6516|example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml
argo-cd/application-crd.yaml|argoproj/argo-cd|109ca7ca71139e514114499d294a492e7910a965|manifests/crds/application-crd.yaml
argo-cd/appproject-crd.yaml|argoproj/argo-cd|109ca7ca71139e514114499d294a492e7910a965|manifests/crds/appproject-crd.yaml
cloudnative-pg/postgresql.cnpg.io_clusters.yaml|cloudnative-pg/cloudnative-pg|4b5e244a7d031f67e025c83c1555e7726ecbbfa1|config/crd/bases/postgresql.cnpg.io_clusters.yaml
cloudnative-pg/postgresql.cnpg.io_scheduledbackups.yaml|cloudnative-pg/cloudnative-pg|4b5e244a7d031f67e025c83c1555e7726ecbbfa1|config/crd/bases/postgresql.cnpg.io_scheduledbackups.yaml
cloudnative-pg/postgresql.cnpg.io_poolers.yaml|cloudnative-pg/cloudnative-pg|4b5e244a7d031f67e025c83c1555e7726ecbbfa1|config/crd/bases/postgresql.cnpg.io_poolers.yaml
cnpg-plugin-barman-cloud/barmancloud.cnpg.io_objectstores.yaml|cloudnative-pg/plugin-barman-cloud|1e13020fe5f09fd8fc29ea03828f7b61375b3721|config/crd/bases/barmancloud.cnpg.io_objectstores.yaml
keda/keda.sh_scaledobjects.yaml|kedacore/keda|68a5b5028f35b22d50597c69819ab32c4e92f21a|config/crd/bases/keda.sh_scaledobjects.yaml
keda/keda.sh_triggerauthentications.yaml|kedacore/keda|68a5b5028f35b22d50597c69819ab32c4e92f21a|config/crd/bases/keda.sh_triggerauthentications.yaml
"

command -v curl >/dev/null || { echo "fetch_crds: curl is required" >&2; exit 2; }
failed=0
while IFS='|' read -r local repo commit path; do
  [[ -n "$local" ]] || continue
  target="$dest/$local"
  mkdir -p "$(dirname "$target")"
  curl -fsSL --retry 3 -o "$target.part" "https://raw.githubusercontent.com/$repo/$commit/$path"
  expected=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["crds"][sys.argv[2]])' \
    "$root/imports/SOURCE.json" "$local")
  actual=$(sha256sum "$target.part" | cut -d' ' -f1)
  if [[ "$actual" != "$expected" ]]; then
    echo "fetch_crds: $local: checksum $actual, expected $expected" >&2
    rm -f "$target.part"
    failed=1
    continue
  fi
  mv "$target.part" "$target"
  echo "fetch_crds: $local"
done <<<"$pins"
exit "$failed"
