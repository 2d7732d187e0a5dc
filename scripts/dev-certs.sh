#!/usr/bin/env bash
# Make a TLS certificate for the dev domain and store it as the Ingress' TLS
# Secret in the cluster. Nothing secret is rendered into dist/.
#
# With mkcert installed, its local CA is used (and trusted by your browser
# after `mkcert -install`). Otherwise openssl makes a local CA once
# (certs/ca.crt: import it into your browser or pass it to curl --cacert) and
# signs a leaf certificate for the domain and its subdomains.
# certs/ca-file names the CA certificate that signed the current leaf
# ($(mkcert -CAROOT)/rootCA.pem or certs/ca.crt); scripts/smoke.py trusts it,
# because Python's OpenSSL does not read the macOS Keychain mkcert installs into.
#
# usage: scripts/dev-certs.sh [--domain D] [--namespace NS] [--secret NAME] [--dir certs] [--dry-run]
#   --dry-run   print the Secret manifest to stdout instead of applying it
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
domain=$(sed -n 's/^domain: *//p' "$root/env/dev.yaml")
namespace=$(sed -n 's/^namespace: *//p' "$root/env/dev.yaml")
secret=vibearena-tls
dir="$root/certs"
dry_run=false

die() { printf 'dev-certs: %s\n' "$*" >&2; exit 2; }
log() { printf 'dev-certs: %s\n' "$*" >&2; }

while (($#)); do
  case "$1" in
    --domain) domain=${2:?--domain needs a name}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a name}; shift 2 ;;
    --secret) secret=${2:?--secret needs a name}; shift 2 ;;
    --dir) dir=${2:?--dir needs a path}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ "$domain" =~ ^[a-z0-9.-]+$ ]] || die "bad domain: $domain"
command -v kubectl >/dev/null || die "kubectl is required"
mkdir -p "$dir"
chmod 700 "$dir"
cert="$dir/$domain.crt"
key="$dir/$domain.key"

if command -v mkcert >/dev/null && [[ "${DEV_CERTS_FORCE_OPENSSL:-}" != 1 ]]; then
  log "using mkcert's local CA"
  mkcert -cert-file "$cert" -key-file "$key" "$domain" "*.$domain" >/dev/null 2>&1
  ca_file="$(mkcert -CAROOT)/rootCA.pem"
else
  command -v openssl >/dev/null || die "openssl (or mkcert) is required"
  if [[ ! -s "$dir/ca.crt" || ! -s "$dir/ca.key" ]]; then
    log "creating a local CA in $dir (valid 10 years)"
    openssl req -x509 -newkey rsa:3072 -sha256 -days 3650 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" \
      -subj "/CN=VibeArena dev CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 600 "$dir/ca.key"
  fi
  extensions=$(mktemp)
  trap 'rm -f "$extensions" "$dir/$domain.csr"' EXIT
  printf 'subjectAltName=DNS:%s,DNS:*.%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
    "$domain" "$domain" >"$extensions"
  # 397 days: the longest validity browsers accept for a leaf certificate.
  openssl req -newkey rsa:2048 -nodes -keyout "$key" -out "$dir/$domain.csr" -subj "/CN=$domain" 2>/dev/null
  openssl x509 -req -in "$dir/$domain.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 397 -sha256 -extfile "$extensions" -out "$cert" 2>/dev/null
  chmod 600 "$key"
  log "certificate for $domain signed by $dir/ca.crt"
  ca_file="$(cd "$dir" && pwd)/ca.crt"
fi
[[ -s "$ca_file" ]] || die "the CA certificate $ca_file is missing"
printf '%s\n' "$ca_file" >"$dir/ca-file"

manifest=$(kubectl create secret tls "$secret" --namespace "$namespace" --cert "$cert" --key "$key" \
  --dry-run=client -o yaml)
if $dry_run; then
  printf '%s\n' "$manifest"
else
  printf '%s\n' "$manifest" | kubectl apply -f - >/dev/null
  log "applied secret $namespace/$secret"
fi
