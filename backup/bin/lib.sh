# shellcheck shell=bash
# Shared helpers for the backup scripts. Sourced, never executed.
#
# Conventions kept by every script:
# - configuration comes only from environment variables; nothing is written to disk
#   except short-lived files under ${TMPDIR:-/tmp};
# - secrets stay in the environment (rclone and libpq read them from there), so they
#   never appear on a command line, in `ps` output or in a log line;
# - logs go to stderr, prefixed with the script name; the last line of a failed run
#   is "<script>: error: <reason>";
# - exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

PROG=$(basename "$0")

log() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

# die REASON: exit 1 with a one-line reason. The reason is printed by the EXIT trap
# after the script's cleanup hook, so it stays the last line even if cleanup logs.
die() {
    fail 1 "$*"
}

usage_error() {
    fail 2 "$* (see $PROG --help)"
}

FAIL_REASON=""
CLEANUP_HOOK=""

fail() {
    if [[ -z $FAIL_REASON ]]; then
        FAIL_REASON=$2
        # A subshell does not run the EXIT trap: print at once.
        if [[ $BASHPID != "$$" ]]; then
            printf '%s: error: %s\n' "$PROG" "$FAIL_REASON" >&2
        fi
    fi
    exit "$1"
}

on_exit() {
    local rc=$?
    if [[ -n $CLEANUP_HOOK ]]; then
        "$CLEANUP_HOOK" || log "warning: cleanup failed"
    fi
    if [[ $rc -ne 0 && -n $FAIL_REASON ]]; then
        printf '%s: error: %s\n' "$PROG" "$FAIL_REASON" >&2
    fi
    exit "$rc"
}
trap on_exit EXIT

# Safety net for failures that no explicit check caught: still give a one-line reason.
trap 'fail "$?" "unexpected failure (exit $?) at line $LINENO"' ERR

# A trapped TERM/INT makes bash run the EXIT trap (cleanup) before leaving.
trap 'fail 143 "terminated by SIGTERM"' TERM
trap 'fail 130 "interrupted"' INT

require_env() {
    local name
    for name in "$@"; do
        [[ -n ${!name:-} ]] || usage_error "$name is required"
    done
}

# require_uint OUT_VAR ENV_NAME DEFAULT MIN: read a non-negative integer setting.
require_uint() {
    local _out=$1 _name=$2 _default=$3 _min=$4 _value
    _value=${!_name:-$_default}
    [[ $_value =~ ^[0-9]+$ ]] || usage_error "$_name must be a non-negative integer"
    ((10#$_value >= _min)) || usage_error "$_name must be >= $_min"
    printf -v "$_out" '%d' "$((10#$_value))"
}

# require_name OUT_VAR ENV_NAME DEFAULT: a value used as one path segment or label.
require_name() {
    local _out=$1 _name=$2 _default=$3 _value
    _value=${!_name:-$_default}
    [[ $_value =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] ||
        usage_error "$_name must match [A-Za-z0-9][A-Za-z0-9_.-]*"
    printf -v "$_out" '%s' "$_value"
}

# require_prefix OUT_VAR ENV_NAME DEFAULT: an S3 key prefix such as "a" or "a/b".
require_prefix() {
    local _out=$1 _name=$2 _default=$3 _value
    _value=${!_name:-$_default}
    [[ $_value =~ ^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$ ]] ||
        usage_error "$_name must be path segments of [A-Za-z0-9_.-] joined by '/'"
    printf -v "$_out" '%s' "$_value"
}

require_bucket() {
    local name=$1 value=${!1:-}
    [[ $value =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] ||
        usage_error "$name must be a valid S3 bucket name"
}

# rclone reads every flag from RCLONE_<FLAG>; set bounded defaults that an operator can
# still override. A refused connection fails in seconds. A server that accepts but never
# answers fails one S3 call after about (LOW_LEVEL_RETRIES + 1) x 2 x TIMEOUT, measured
# with rclone 1.60: 3 x 2 x 30 s = 3 min with these defaults. --timeout is an idle
# timeout, so long transfers that make progress are not cut.
rclone_setup() {
    # No config file: remotes are defined by RCLONE_CONFIG_<REMOTE>_* variables only.
    export RCLONE_CONFIG=/dev/null
    export RCLONE_CONTIMEOUT=${RCLONE_CONTIMEOUT:-10s}
    export RCLONE_TIMEOUT=${RCLONE_TIMEOUT:-30s}
    export RCLONE_RETRIES=${RCLONE_RETRIES:-1}
    export RCLONE_LOW_LEVEL_RETRIES=${RCLONE_LOW_LEVEL_RETRIES:-2}
    # rclone and libpq want a writable home for caches; the root fs is read-only.
    export HOME=${HOME:-/tmp}
    [[ -w $HOME ]] || export HOME=${TMPDIR:-/tmp}
}

# s3_remote REMOTE ENDPOINT_VAR KEY_VAR SECRET_VAR REGION_VAR PROVIDER_VAR [check_bucket]
# Defines rclone remote REMOTE from the named variables. Only the variable names are
# handled here; the values go straight into rclone's environment.
s3_remote() {
    local remote=$1 endpoint_var=$2 key_var=$3 secret_var=$4 region_var=$5 provider_var=$6
    local check_bucket=${7:-no} upper endpoint
    require_env "$endpoint_var" "$key_var" "$secret_var"
    upper=${remote^^}
    endpoint=${!endpoint_var}
    # Endpoints without a scheme are in-cluster Service addresses ("minio:9000").
    case $endpoint in
        http://* | https://*) ;;
        *) endpoint="http://$endpoint" ;;
    esac
    export "RCLONE_CONFIG_${upper}_TYPE=s3"
    export "RCLONE_CONFIG_${upper}_PROVIDER=${!provider_var:-Other}"
    export "RCLONE_CONFIG_${upper}_ENDPOINT=$endpoint"
    export "RCLONE_CONFIG_${upper}_ACCESS_KEY_ID=${!key_var}"
    export "RCLONE_CONFIG_${upper}_SECRET_ACCESS_KEY=${!secret_var}"
    export "RCLONE_CONFIG_${upper}_REGION=${!region_var:-us-east-1}"
    # Path-style URLs work with every S3-compatible server and need no wildcard DNS.
    export "RCLONE_CONFIG_${upper}_FORCE_PATH_STYLE=true"
    if [[ $check_bucket == no ]]; then
        # Buckets are created by ensure-bucket; a typo must fail, not create a bucket.
        export "RCLONE_CONFIG_${upper}_NO_CHECK_BUCKET=true"
    fi
}

# The backup store (BACKUP_S3_*) is where dumps and status objects live.
backup_remote() {
    require_env BACKUP_S3_BUCKET
    require_bucket BACKUP_S3_BUCKET
    s3_remote backup BACKUP_S3_ENDPOINT BACKUP_S3_ACCESS_KEY_ID \
        BACKUP_S3_SECRET_ACCESS_KEY BACKUP_S3_REGION BACKUP_S3_PROVIDER
    STATUS_PREFIX=""
    require_prefix STATUS_PREFIX BACKUP_STATUS_PREFIX status
}

# delete_object REMOTE:PATH: best effort, used on cleanup paths. "Not found" is fine.
delete_object() {
    local rc=0
    rclone deletefile "$1" 2>/dev/null || rc=$?
    case $rc in
        0 | 3 | 4) return 0 ;;
        *) log "warning: could not delete $1 (rclone exit $rc)" ;;
    esac
}

# write_status JOB JSON: the freshness record read by backup-exporter. Written last,
# so it only ever describes a run that fully succeeded.
write_status() {
    local job=$1 json=$2
    printf '%s\n' "$json" | rclone rcat "backup:$BACKUP_S3_BUCKET/$STATUS_PREFIX/$job.json" ||
        die "could not write status object $STATUS_PREFIX/$job.json"
}

utc_stamp() { date -u -d "@$1" +%Y%m%dT%H%M%SZ; }
utc_iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# stamp_epoch OUT_VAR STAMP: 20261127T031500Z -> seconds since the epoch.
stamp_epoch() {
    local _out=$1 _s=$2 _epoch
    [[ $_s =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || return 1
    _epoch=$(date -u -d "${_s:0:4}-${_s:4:2}-${_s:6:2} ${_s:9:2}:${_s:11:2}:${_s:13:2} UTC" +%s) ||
        return 1
    printf -v "$_out" '%s' "$_epoch"
}

# Postgres connections must not hang either.
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}

# psql_vars DB [NAME=VALUE...] < SQL: run SQL read from stdin against DB. Values are
# passed as psql variables and quoted by psql (:'name' literal, :"name" identifier),
# so database names never need shell-side escaping.
psql_vars() {
    local db=$1 arg
    shift
    local args=(-X -A -t -q -v ON_ERROR_STOP=1 -d "$db")
    for arg in "$@"; do
        args+=(-v "$arg")
    done
    psql "${args[@]}"
}

# A FIFO reader blocked in open() would hang `wait` forever if the writer never
# started; opening the FIFO read-write once (never blocks on Linux) releases it.
release_fifo() {
    local f
    for f in "$@"; do
        if [[ -p $f ]]; then
            : <>"$f"
        fi
    done
}
