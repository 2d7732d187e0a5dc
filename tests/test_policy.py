"""Policy tests over the rendered objects of every env: the backbone.

Each rule is checked on the manifests exactly as they are written to dist/,
so a construct that drops a setting fails here whatever its code says.
"""

from __future__ import annotations

import re

import pytest

from tests.support.manifests import (
    DNS_SUBDOMAIN,
    ENVS,
    RECOMMENDED_LABELS,
    SELECTOR_LABELS,
    label_problems,
    name_of,
    of_kind,
    one,
    pod_templates,
)

# Pod Security Standards, "restricted" profile (kubernetes.io/docs/concepts/security/pod-security-standards).
PSS_RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                               "persistentVolumeClaim", "projected", "secret"}
MIN_UID = 10000


@pytest.fixture(params=ENVS)
def env(request):
    return request.param


def test_every_env_has_workloads(manifests, env):
    assert pod_templates(manifests[env]), f"{env} renders no pod templates"


def test_pods_are_hardened(manifests, env):
    for pod in pod_templates(manifests[env]):
        spec, where = pod.spec, pod.where
        security = spec.get("securityContext", {})
        assert security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert security.get("runAsUser", 0) >= MIN_UID, f"{where}: runAsUser below {MIN_UID}"
        assert security.get("runAsGroup", 0) >= MIN_UID, f"{where}: runAsGroup below {MIN_UID}"
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: token mounted"
        account = spec.get("serviceAccountName")
        assert account and account != "default", f"{where}: needs a dedicated ServiceAccount"
        for container in pod.containers():
            c_where = f"{where} container {container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{c_where}: privilege escalation"
            assert sc.get("readOnlyRootFilesystem") is True, f"{c_where}: writable root filesystem"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{c_where}: capabilities not dropped"
            assert not sc.get("capabilities", {}).get("add"), f"{c_where}: adds capabilities"
            assert sc.get("privileged") in (None, False), f"{c_where}: privileged"
            assert sc.get("runAsUser", MIN_UID) >= MIN_UID, f"{c_where}: runAsUser"


def test_pod_security_restricted(manifests, env):
    """Our own check of the PSS restricted rules, beside the admission labels."""
    for pod in pod_templates(manifests[env]):
        spec, where = pod.spec, pod.where
        for host_field in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host_field), f"{where}: {host_field}"
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= PSS_RESTRICTED_VOLUME_TYPES, f"{where}: volume {volume['name']} uses {kinds}"
        for container in pod.containers():
            for port in container.get("ports", []):
                assert "hostPort" not in port, f"{where}: hostPort on {container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("seccompProfile", {}).get("type", "RuntimeDefault") in {"RuntimeDefault", "Localhost"}
            assert "procMount" not in sc or sc["procMount"] == "Default", f"{where}: procMount"


def test_containers_have_requests_and_limits(manifests, env):
    for pod in pod_templates(manifests[env]):
        for container in pod.containers():
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(section, {}), \
                        f"{pod.where} container {container['name']}: no {resource} {section[:-1]}"


def test_serving_containers_have_probes(manifests, env):
    for pod in pod_templates(manifests[env]):
        for container in pod.spec["containers"]:
            if container.get("ports"):
                for probe in ("readinessProbe", "livenessProbe"):
                    assert probe in container, f"{pod.where} container {container['name']}: no {probe}"


def test_every_object_has_recommended_labels(manifests, env):
    for obj in manifests[env]:
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in RECOMMENDED_LABELS if not labels.get(label)]
        assert not missing, f"{name_of(obj)}: missing labels {missing}"
    for pod in pod_templates(manifests[env]):
        missing = [label for label in RECOMMENDED_LABELS if not pod.labels.get(label)]
        assert not missing, f"{pod.where} pod template: missing labels {missing}"


def operator_pods(selector: dict) -> bool:
    """A selector over pods CloudNativePG creates (not ours to label)."""
    labels = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    return isinstance(labels, dict) and "cnpg.io/cluster" in labels


def test_selectors_use_stable_labels_only(manifests, env):
    for obj in manifests[env]:
        selector = obj.get("spec", {}).get("selector")
        if obj["kind"] in ("Service", "PodMonitor") and operator_pods(selector or {}):
            # The Cluster of that name must be rendered in the same env.
            assert one(manifests[env], "Cluster", (selector.get("matchLabels") or selector)["cnpg.io/cluster"])
            continue
        if obj["kind"] == "Service":
            keys = set(selector or {})
        elif isinstance(selector, dict):
            keys = set(selector.get("matchLabels", {}))
        else:
            continue
        assert keys == SELECTOR_LABELS, f"{name_of(obj)}: selector keys {sorted(keys)}"


def test_every_service_selects_a_pod_template(manifests, env):
    templates = pod_templates(manifests[env])
    for service in of_kind(manifests[env], "Service"):
        selector = service["spec"]["selector"]
        if operator_pods(selector):
            continue  # CNPG's pods: checked in test_selectors_use_stable_labels_only
        matching = [p for p in templates if selector.items() <= p.labels.items()]
        assert matching, f"{name_of(service)}: selects no pod template"
        for port in service["spec"].get("ports", []):
            target = port["targetPort"]
            names = {p.get("name") for pod in matching for c in pod.spec["containers"] for p in c.get("ports", [])}
            numbers = {p["containerPort"] for pod in matching for c in pod.spec["containers"]
                       for p in c.get("ports", [])}
            assert target in names | numbers, f"{name_of(service)}: targetPort {target} matches no container port"


def test_nothing_is_exposed_but_the_ingress(manifests, env):
    for service in of_kind(manifests[env], "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name_of(service)}: public type"
        assert not service["spec"].get("externalIPs"), f"{name_of(service)}: externalIPs"
    for pod in pod_templates(manifests[env]):
        assert not pod.spec.get("hostNetwork"), f"{pod.where}: hostNetwork"
        for volume in pod.spec.get("volumes", []):
            assert "hostPath" not in volume, f"{pod.where}: hostPath volume {volume['name']}"


def test_images_are_pinned(manifests, env):
    for pod in pod_templates(manifests[env]):
        for container in pod.containers():
            image = container["image"]
            assert "@sha256:" in image or re.search(r":[^/:]+$", image), f"{pod.where}: {image} has no tag"
            assert not image.endswith(":latest"), f"{pod.where}: {image} uses latest"


def test_no_secret_objects_are_rendered(manifests, env):
    kinds = {obj["kind"] for obj in manifests[env]}
    assert "Secret" not in kinds, f"{env}: a Secret object is rendered"
    for pod in pod_templates(manifests[env]):
        for container in pod.containers():
            for var in container.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", var["name"]) and "value" in var:
                    pytest.fail(f"{pod.where}: {var['name']} has a literal value instead of a secretKeyRef")


def test_namespace_enforces_restricted_pod_security(manifests, env):
    (namespace,) = of_kind(manifests[env], "Namespace")
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", f"{env}: PSA {mode}"
    (limit_range,) = of_kind(manifests[env], "LimitRange")
    item = limit_range["spec"]["limits"][0]
    assert item["type"] == "Container" and item["default"] and item["defaultRequest"]
    for obj in manifests[env]:
        if obj["kind"] not in {"Namespace", "ClusterIssuer"}:
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], \
                f"{name_of(obj)}: not in the env namespace"


def test_every_pod_is_covered_by_default_deny(manifests, env):
    policies = of_kind(manifests[env], "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, f"{env}: no default-deny NetworkPolicy"
    assert pod_templates(manifests[env]), "nothing to cover"


def test_names_and_labels_are_valid_kubernetes_syntax(manifests, env):
    """JSON schemas do not check these; the API server does, at apply time."""
    for obj in manifests[env]:
        name = obj["metadata"]["name"]
        assert DNS_SUBDOMAIN.match(name) and len(name) <= 253, f"{name_of(obj)}: bad name"
        if obj["kind"] in ("Service", "Namespace", "Job", "CronJob", "StatefulSet"):
            # These names become DNS labels or pod labels: 63 characters at most
            # (52 for a CronJob, whose Jobs get a suffix).
            assert len(name) <= (52 if obj["kind"] == "CronJob" else 63), f"{name_of(obj)}: name too long"
        problems = label_problems(obj["metadata"].get("labels", {}))
        assert not problems, (name_of(obj), problems)
    for pod in pod_templates(manifests[env]):
        assert not label_problems(pod.labels), (pod.where, label_problems(pod.labels))


def test_label_check_rejects_a_digest_as_value():
    assert label_problems({"app.kubernetes.io/version": "sha256:" + "a" * 64})


def test_variables_from_the_secret_never_get_literal_values(manifests, env):
    """A name that is filled from the Secret anywhere must never carry a value."""
    from_secret, literal = set(), {}
    for pod in pod_templates(manifests[env]):
        for container in pod.containers():
            for var in container.get("env", []):
                if "secretKeyRef" in var.get("valueFrom", {}):
                    from_secret.add(var["name"])
                elif "value" in var:
                    literal.setdefault(var["name"], pod.where)
    leaked = {name: where for name, where in literal.items() if name in from_secret}
    assert not leaked, f"{env}: secret variables with literal values: {leaked}"


# Argo CD's label tracking key and tracking annotation (argo-cd
# docs/user-guide/resource_tracking.md); the label key is configurable, so
# label values are checked against every Application name too.
ARGO_TRACKING_LABEL = "app.kubernetes.io/instance"
ARGO_TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"


def claim_metadata(objects: list[dict]) -> list[tuple[str, dict]]:
    """Metadata a controller copies onto the PVCs it creates for an object."""
    found = []
    for obj in objects:
        if obj["kind"] == "StatefulSet":
            found += [(f"{name_of(obj)} claim {t['metadata']['name']}", t["metadata"])
                      for t in obj["spec"].get("volumeClaimTemplates", [])]
        elif obj["kind"] == "Cluster" and obj["apiVersion"].startswith("postgresql.cnpg.io/"):
            # CloudNativePG copies spec.inheritedMetadata onto its PVCs.
            found.append((f"{name_of(obj)} inheritedMetadata", obj["spec"].get("inheritedMetadata", {})))
    return found


@pytest.fixture(scope="module")
def application_names(stacks, manifests) -> set[str]:
    from main import build_argocd

    rendered = build_argocd([stacks[e].profile for e in ENVS], manifests)
    # Every env's instance, managed by Argo CD today or not.
    return {a["metadata"]["name"] for a in of_kind(rendered, "Application")} | {
        stacks[e].profile.instance for e in ENVS}


def test_no_argocd_tracking_method_can_adopt_a_volume(manifests, env, application_names):
    """PVCs from claim templates have no owner references and are not in git:
    an Argo CD that takes them for its own prunes the database's volume."""
    assert "vibearena-prod" in application_names, "the names come from the rendered Applications"
    for where, meta in claim_metadata(manifests[env]):
        labels = meta.get("labels") or {}
        assert ARGO_TRACKING_LABEL not in labels, f"{where}: carries the Argo CD tracking label"
        assert not set(labels.values()) & application_names, f"{where}: a label value names an Application"
        assert ARGO_TRACKING_ANNOTATION not in (meta.get("annotations") or {}), where


def test_every_env_renders_volume_claims_to_check(manifests):
    assert all(claim_metadata(manifests[e]) for e in ENVS), "the tracking policy would check nothing"


def test_volume_owners_skip_the_recursive_chown(manifests, env):
    """fsGroup makes the kubelet chown every file of a volume on each mount
    unless the root already matches (OnRootMismatch)."""
    checked = 0
    for pod in pod_templates(manifests[env]):
        context = pod.spec.get("securityContext", {})
        persistent = bool(pod.owner["spec"].get("volumeClaimTemplates")) or any(
            "persistentVolumeClaim" in v or "ephemeral" in v for v in pod.spec.get("volumes", []))
        if "fsGroup" in context and persistent:
            checked += 1
            assert context.get("fsGroupChangePolicy") == "OnRootMismatch", pod.where
    assert checked, f"{env}: no pod with fsGroup and a volume to check"
