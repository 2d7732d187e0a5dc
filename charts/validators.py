"""Value checks for profile fields, each written against the grammar of the
program that consumes the value (cited per check). Every check raises
ValueError with a one-line message ending in `(got <value>)`.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable, Mapping
from decimal import Decimal
from urllib.parse import urlsplit

from charts.schema import Check, InvalidKeyError, dns_label, dns_name, quantity_value, show

__all__ = ["dns_label", "dns_name"]

# --- Kubernetes names and labels (apimachinery util/validation) -------------

_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def public_host(value: str) -> None:
    """The public host name of an env (Ingress host, certificate name)."""
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        pass
    else:
        raise ValueError(f"must be a DNS name, not an IP address (got {show(value)})")
    dns_name(value)
    labels = value.split(".")
    if len(labels) < 2:
        raise ValueError(f"must be a fully qualified name with a dot, like app.example.com (got {show(value)})")
    if labels[-1].isdigit():
        raise ValueError(f"must end in a top-level domain, not a number (got {show(value)})")


def label_key(value: str) -> None:
    """[prefix/]name: prefix a DNS subdomain (253), name 63 of [-A-Za-z0-9_.] starting and ending alphanumeric."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        try:
            dns_name(prefix)
        except ValueError:
            raise ValueError(f"label key prefix must be a DNS name (got {show(value)})") from None
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError("must be a label key: [prefix/]name, the name at most 63 letters, digits, '-', '_', '.',"
                         f" starting and ending with a letter or digit (got {show(value)})")


def label_value(value: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise ValueError("must be a label value: at most 63 letters, digits, '-', '_', '.', starting and ending"
                         f" with a letter or digit (got {show(value)})")


def label_map(*, required: bool) -> Check:
    """A label map; `required` when it is used as a selector (an empty
    selector matches every pod, which would silently widen a rule)."""
    def rule(value: Mapping[str, str]) -> None:
        if required and not value:
            raise ValueError("must name at least one label (an empty selector matches every pod)")
        for key, item in value.items():
            try:
                label_key(key)
                label_value(item)
            except ValueError as err:
                raise InvalidKeyError(key, str(err)) from None
    return rule


def each(rule: Callable[[str], None]) -> Check:
    """Apply `rule` to every item of a list, blaming the item's index."""
    def check(values: tuple[str, ...]) -> None:
        for index, item in enumerate(values):
            try:
                rule(item)
            except ValueError as err:
                raise InvalidKeyError(index, str(err)) from None
    return check


def optional(rule: Callable[[str], None]) -> Check:
    def check(value: str | None) -> None:
        if value is not None:
            rule(value)
    return check


# --- Quantities ----------------------------------------------------------

MiB = 2**20


def cpu_quantity(value: str) -> None:
    if quantity_value(value) <= 0:
        raise ValueError(f"must be greater than zero (got {show(value)})")


def bytes_quantity(minimum: int = MiB, what: str = "memory") -> Check:
    """Bytes: a whole number, at least `minimum` (512m is 0.512 bytes, not 512 MiB)."""
    def rule(value: str) -> None:
        amount = quantity_value(value)
        if amount != amount.to_integral_value():
            hint = f"; did you mean {value[:-1]}Mi?" if value.endswith("m") else ""
            raise ValueError(f"{what} must be whole bytes{hint} (got {show(value)})")
        if amount < minimum:
            raise ValueError(f"{what} must be at least {_bytes(minimum)} (got {show(value)})")
    return rule


def _bytes(amount: int | Decimal) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", MiB), ("Ki", 2**10)):
        if amount >= size and amount % size == 0:
            return f"{int(amount) // size}{unit}"
    return str(int(amount))


# --- Images (distribution/reference grammar) --------------------------------

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?"
_REPOSITORY = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def image_repository(value: str) -> None:
    if "@" in value or ":" in value.rsplit("/", 1)[-1]:
        raise ValueError(f"must not hold a tag or digest; put it in `tag` (got {show(value)})")
    if len(value) > 255 or not _REPOSITORY.fullmatch(value):
        raise ValueError("must be an image repository like ghcr.io/org/name (path in lower case, registry"
                         f" host and port optional) (got {show(value)})")
    first, slash, _rest = value.partition("/")
    if slash and not ("." in first or ":" in first or first == "localhost") and first != first.lower():
        raise ValueError(f"the repository path must be lower case (got {show(value)})")


def image_tag(value: str) -> None:
    if not (_TAG.fullmatch(value) or _DIGEST.fullmatch(value)):
        raise ValueError("must be an image tag (letters, digits, '_', '.', '-'; at most 128) or sha256:<64 hex"
                         f" digits> (got {show(value)})")


def image_digest(value: str) -> None:
    if not _DIGEST.fullmatch(value):
        raise ValueError(f"must be sha256:<64 lower-case hex digits>, the registry's digest (got {show(value)})")


# --- Schedules and time -----------------------------------------------------

# robfig/cron v3 ParseStandard, which Kubernetes CronJob validation calls.
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_CronField = tuple[str, int, int, dict[str, int]]
_CRON_FIELDS: tuple[_CronField, ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS))
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def cron(value: str) -> None:
    """A 5-field schedule or a macro, as Kubernetes accepts it; refuses what never fires."""
    if value in _CRON_MACROS:
        return
    if len(value) > 200:
        raise ValueError(f"a schedule may have at most 200 characters (got {show(value)})")
    if "TZ" in value:
        raise ValueError(f"must not set TZ or CRON_TZ; use the time_zone key (got {show(value)})")
    parts = value.split()
    if len(parts) != 5 or value != value.strip() or "\n" in value:
        raise ValueError("must be a 5-field cron schedule (minute hour day-of-month month day-of-week)"
                         f" or one of {', '.join(_CRON_MACROS)} (got {show(value)})")
    chosen = []
    for part, (name, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        try:
            chosen.append(_cron_field(part, low, high, names))
        except ValueError as err:
            raise ValueError(f"{name} field {part!r}: {err} (got {show(value)})") from None
    days, months = chosen[2], chosen[3]
    if parts[4] in ("*", "?") and not any(day <= _DAYS_IN_MONTH[month - 1] for day in days for month in months):
        raise ValueError(f"never runs: no chosen month has the chosen day (got {show(value)})")


def _cron_field(part: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    chosen: set[int] = set()
    for item in part.split(","):
        span, slash, step_text = item.partition("/")
        step = _cron_number(step_text, {}) if slash else 1
        if slash and step == 0:
            raise ValueError("the step must be at least 1")
        if span in ("*", "?"):
            start, end = low, high
        else:
            first, dash, last = span.partition("-")
            start = _cron_number(first, names)
            end = _cron_number(last, names) if dash else (high if slash else start)
        if start < low or end > high:
            raise ValueError(f"values must be between {low} and {high}")
        if start > end:
            raise ValueError("a range must go from low to high")
        chosen.update(range(start, end + 1, step))
    return chosen


def _cron_number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not re.fullmatch(r"[0-9]{1,3}", text):
        raise ValueError(f"{text!r} is not a number" + (" or a name" if names else ""))
    return int(text)


_TZ_PART = re.compile(r"[A-Za-z.\-_0-9+]{1,14}")


def iana_time_zone(value: str) -> None:
    """An IANA zone name, as Kubernetes CronJob validation checks it (no `Local`)."""
    if value.lower() == "local":
        raise ValueError(f"must be an explicit IANA time zone; Kubernetes refuses Local (got {show(value)})")
    parts = value.split("/")
    if not all(_TZ_PART.fullmatch(p) and p not in (".", "..") and not p.startswith("-") for p in parts) \
            or value not in _zones():
        raise ValueError(f"must be an IANA time zone like Etc/UTC or Europe/Berlin (got {show(value)})")


_ZONES: set[str] = set()


def _zones() -> set[str]:
    if not _ZONES:
        _ZONES.update(zoneinfo.available_timezones())
    return _ZONES


# Prometheus/Loki model.Duration: units y w d h m s ms, largest first, each once.
_PROM_DURATION = re.compile(r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?"
                            r"(?:([0-9]+)s)?(?:([0-9]+)ms)?")
_PROM_UNITS_MS = (365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)
# Go time.Duration: signed int64 nanoseconds, about 292 years.
_GO_DURATION_MAX_MS = (2**63 - 1) // 1_000_000


def duration_ms(value: str) -> int:
    match = _PROM_DURATION.fullmatch(value) if value and len(value) <= 40 else None
    if not match or not any(match.groups()):
        raise ValueError(f"must be a duration like 30s, 10m, 24h or 15d (got {show(value)})")
    total = sum(int(n) * unit for n, unit in zip(match.groups(), _PROM_UNITS_MS, strict=True) if n)
    if total > _GO_DURATION_MAX_MS:
        raise ValueError(f"is longer than a duration can be (about 292 years) (got {show(value)})")
    return total


def duration(minimum_ms: int = 1, units: str = "") -> Check:
    """A Prometheus-style duration of at least `minimum_ms`; `units` limits the suffixes allowed."""
    def rule(value: str) -> None:
        if units and not re.fullmatch(rf"[0-9]+(?:{units})", value):
            allowed = ", ".join(units.split("|"))
            raise ValueError(f"must be a duration: a whole number with one unit of {allowed} (got {show(value)})")
        if duration_ms(value) < minimum_ms:
            raise ValueError(f"must be at least {_ms(minimum_ms)} (got {show(value)})")
    return rule


def _ms(amount: int) -> str:
    for unit, size in (("d", 86400_000), ("h", 3600_000), ("m", 60_000), ("s", 1000)):
        if amount >= size and amount % size == 0:
            return f"{amount // size}{unit}"
    return f"{amount}ms"


# --- Addresses ---------------------------------------------------------------

def cidr_block(value: str) -> None:
    """An IPv4 or IPv6 network in canonical form (what NetworkPolicy ipBlock expects)."""
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        reason = "host bits are set" if "host bits" in str(err) else "not a CIDR"
        raise ValueError(f"must be a network like 10.0.0.0/8 or 172.18.0.2/32 ({reason}) (got {show(value)})") \
            from None
    if str(network) != value:
        raise ValueError(f"must be written in canonical form {str(network)!r} (got {show(value)})")


def url(*schemes: str, path: bool = True) -> Check:
    """An absolute URL with one of `schemes` and no credentials (they belong in the Secret)."""
    def rule(value: str) -> None:
        shown = _redact(value)
        if len(value) > 2048 or any(c.isspace() or not c.isprintable() or not c.isascii() for c in value):
            raise ValueError(f"must be a URL without spaces or special characters (got {shown})")
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise ValueError(f"must be a URL with a valid host and port (got {shown})") from None
        if parts.scheme not in schemes:
            raise ValueError(f"must be a {' or '.join(schemes)} URL (got {shown})")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"must not contain credentials; they belong in the Secret (got {shown})")
        if not parts.hostname:
            raise ValueError(f"must name a host (got {shown})")
        _url_host(parts.hostname, shown)
        if port == 0:
            raise ValueError(f"port must be between 1 and 65535 (got {shown})")
        if parts.query or parts.fragment:
            raise ValueError(f"must not have a query or fragment (got {shown})")
        if not path and parts.path not in ("", "/"):
            raise ValueError(f"must not have a path (got {shown})")
    return rule


def _url_host(host: str, shown: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        dns_name(host)
    except ValueError:
        raise ValueError(f"must name a valid host (got {shown})") from None


def _redact(value: str) -> str:
    """A URL for a message; show() masks any user:password@ part."""
    return show(value)


def host_port(value: str) -> None:
    """host:port, as an SMTP relay address (Alertmanager smarthost)."""
    host, colon, port = value.rpartition(":")
    if not colon or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be host:port with a port between 1 and 65535 (got {show(value)})")
    _url_host(host.strip("[]"), show(value))


# scp-like git address: user@host:path (ssh with a user name only).
_SCP_GIT = re.compile(r"[A-Za-z0-9._-]+@([A-Za-z0-9.-]+):(?!//)[A-Za-z0-9._~/-]+")


def git_url(value: str) -> None:
    """https:// or ssh:// (a user name, no password) or git@host:path; never a token."""
    if len(value) > 2048:
        raise ValueError(f"a git URL may have at most 2048 characters (got {_redact(value)})")
    if value.startswith("ssh://"):
        parts = urlsplit(value)
        if parts.password is not None:
            raise ValueError(f"must not contain a password; use an SSH key in Argo CD (got {_redact(value)})")
        url("ssh")(value.replace(f"{parts.username}@", "", 1) if parts.username else value)
        return
    if value.startswith("https://"):
        try:
            url("https")(value)
        except ValueError as err:
            if "credentials" in str(err):
                raise ValueError("must not contain a token or password; Argo CD reads repository credentials"
                                 f" from its own Secret (got {_redact(value)})") from None
            raise
        return
    match = _SCP_GIT.fullmatch(value)
    if not match:
        raise ValueError("must be a git URL: https://host/path, ssh://git@host/path or git@host:path"
                         f" (got {show(value)})")
    _url_host(match.group(1), show(value))


_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def email(value: str) -> None:
    local, at, domain = value.rpartition("@")
    ok = bool(at) and len(value) <= 254 and len(local) <= 64 and bool(_EMAIL_LOCAL.fullmatch(local))
    if ok:
        try:
            public_host(domain)
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"must be an e-mail address like ops@example.com (got {show(value)})")


# --- Other names ---------------------------------------------------------------

def celery_queue(value: str) -> None:
    # Queue names are joined with commas for `celery worker --queues` and CE_QUEUES.
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}", value):
        raise ValueError("must be a queue name of letters, digits, '_', '.', ':', '-' (no commas or spaces;"
                         f" at most 100) (got {show(value)})")


def s3_bucket(value: str) -> None:
    """S3 bucket naming rules: 3-63 of [a-z0-9.-], no IP form, no '..'."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value or ".-" in value \
            or "-." in value or re.fullmatch(r"[0-9]+(\.[0-9]+){3}", value):
        raise ValueError(f"must be an S3 bucket name (3-63 of a-z, 0-9, '.', '-') (got {show(value)})")


def s3_region(value: str) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
        raise ValueError(f"must be a region name like us-east-1 (got {show(value)})")


def git_revision(value: str) -> None:
    """A branch, tag or commit (git check-ref-format, simplified)."""
    if not re.fullmatch(r"[A-Za-z0-9._/-]{1,255}", value) or ".." in value or value.startswith(("-", "/", ".")) \
            or value.endswith((".", "/", ".lock")) or "//" in value:
        raise ValueError(f"must be a git branch, tag or commit (got {show(value)})")


def secret_path(value: str) -> None:
    """A key in an external secret store: printable, no spaces."""
    if not re.fullmatch(r"[A-Za-z0-9._/:@+=-]{1,253}", value):
        raise ValueError(f"must be a key of letters, digits and ._/:@+=- (got {show(value)})")
