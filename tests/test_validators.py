"""The checks accept what their consumers accept. The examples come from the
consumers' documentation and tests (named per list), not from the checks, so
a check that grew stricter than Kubernetes, robfig/cron or the distribution
reference grammar fails here; tests/test_bad_input.py covers refusals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from charts import validators
from charts.schema import dns_label, dns_name, quantity_value

# apimachinery resource.Quantity doc comment and quantity_test.go.
QUANTITIES = {"1": "1", "1.5": "1.5", "1500m": "1.5", "1.5Gi": "1610612736", "1536Mi": "1610612736",
              "5e3": "5000", "5E3": "5000", ".5": "0.5", "5.": "5", "+1": "1", "1k": "1000", "1Ki": "1024",
              "1M": "1000000", "1E": "1000000000000000000", "100m": "0.1", "1e-3": "0.001"}


@pytest.mark.parametrize(("text", "value"), QUANTITIES.items())
def test_quantities_parse_to_their_documented_values(text, value):
    assert quantity_value(text) == Decimal(value)


# Kubernetes CronJob documentation (schedule syntax) and robfig/cron v3 README.
SCHEDULES = ["0 0 13 * 5", "*/15 * * * *", "0 0 * * 0", "@hourly", "@yearly", "@annually", "@monthly",
             "@weekly", "@daily", "@midnight", "5 4 * * sun", "0 22 * * 1-5", "23 0-20/2 * * *",
             "0 0,12 1 */2 *", "? ? ? ? ?", "0 0 1 JAN,jul *", "30 3 * * MON-FRI", "5/15 * * * *",
             "0 0 29 2 *", "0 0 31 1-12 *"]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_cron_accepts_what_kubernetes_accepts(schedule):
    validators.cron(schedule)


# distribution/reference regexp_test.go and reference_test.go (valid names).
REPOSITORIES = ["ubuntu", "library/ubuntu", "docker.io/library/ubuntu", "localhost:5000/foo/bar",
                "localhost/foo", "[2001:db8::1]:5000/repo", "a__b", "a-----b", "a.b/c_d",
                "registry.example.com/a.b/c-d/e__f", "ghcr.io/vibearena/api", "quay.io/prometheus/prometheus"]


@pytest.mark.parametrize("repository", REPOSITORIES)
def test_image_repositories_of_the_reference_grammar(repository):
    validators.image_repository(repository)


@pytest.mark.parametrize("tag", ["latest", "v1.2.3", "1.10", "18.6-trixie", "_x", "A" * 128,
                                 "sha256:" + "0123456789abcdef" * 4])
def test_image_tags(tag):
    validators.image_tag(tag)


# IANA zone names Kubernetes loads (time.LoadLocation) and its own test names.
@pytest.mark.parametrize("zone", ["Etc/UTC", "UTC", "America/New_York", "Etc/GMT+5", "America/Argentina/Buenos_Aires",
                                  "Europe/Berlin", "Asia/Kolkata"])
def test_time_zones(zone):
    validators.iana_time_zone(zone)


@pytest.mark.parametrize("value", ["10.0.0.0/8", "172.18.0.2/32", "0.0.0.0/0", "::/0", "2001:db8::/32",
                                   "169.254.20.10/32", "fd00::/8"])
def test_cidrs(value):
    validators.cidr_block(value)


# Label examples from the Kubernetes "Labels and Selectors" page.
@pytest.mark.parametrize(("key", "value"), [("app.kubernetes.io/name", "nginx-ingress"), ("k8s-app", "kube-dns"),
                                            ("release", "kube-prometheus-stack"), ("environment", ""),
                                            ("example.com/tier", "front_end.v1"), ("a", "A" * 63)])
def test_labels(key, value):
    validators.label_map(required=True)({key: value})


@pytest.mark.parametrize("value", ["https://github.com/vibearena/infra.git", "ssh://git@github.com/vibearena/infra.git",
                                   "git@github.com:vibearena/infra.git", "https://git.example.com:8443/a/b",
                                   "ssh://git@git.example.com:2222/a/b.git"])
def test_git_urls_argo_cd_accepts(value):
    validators.git_url(value)


@pytest.mark.parametrize("value", ["ops@example.com", "first.last+tag@sub.example.co.uk", "o'brien@example.ie"])
def test_emails(value):
    validators.email(value)


@pytest.mark.parametrize("value", ["https://s3.amazonaws.com", "https://s3.eu-central-1.amazonaws.com",
                                   "http://minio.storage.svc:9000", "https://10.0.0.5:9000", "https://s3.example.com/"])
def test_s3_endpoints(value):
    validators.url("https", "http", path=False)(value)


@pytest.mark.parametrize("value", ["15d", "168h", "1w", "1y", "30s", "1h30m", "2h15m30s", "500ms"])
def test_prometheus_durations(value):
    validators.duration()(value)


@pytest.mark.parametrize("value", ["a", "a" * 63, "vibearena-dev", "0"])
def test_dns_labels(value):
    dns_label(value)


@pytest.mark.parametrize("value", ["a.b", ".".join(["a" * 63] * 3) + "." + "a" * 61, "cert-manager.cert-manager.svc"])
def test_dns_names(value):
    assert len(value) <= 253
    dns_name(value)
