"""Offline checks of the Helm chart, the plain manifests and the example SecretProviderClasses.

Run it through `bash .ci/chart.sh` (which installs the pinned tools into a venv first).
`--update` rewrites deploy/manifests/ from the chart instead of failing on drift.

Checks:
  - yamllint (strict) on every YAML file that is not a template;
  - `helm lint --strict` (Helm 4, through helm-python-sdk) with each values file, for the oldest
    and newest Kubernetes version we claim;
  - render with each values file; every object validated with kubernetes-validate in strict mode
    for those versions (Prometheus Operator objects against .ci/chart/monitoring-coreos-com-v1.json);
  - the DaemonSet passes exactly the flags the values ask for, each one a flag of the binary
    (read from provider/src/cli.rs), and stays hardened;
  - token review: the service-account token is mounted only when tokenReview.enabled, no volume
    of ours takes its path then, and the chart grants create on tokenreviews (and nothing else)
    exactly when it is enabled and rbac.install;
  - with default values it passes exactly DEFAULT_ARGS, and each of them (but --endpoint) is the
    binary's own default;
  - values.schema.json bounds each integer flag exactly as clap does (value_parser range, else
    the Rust type), except the deliberate narrowings in SCHEMA_NARROWER;
  - every flag of the binary is set by a chart key or is in CHART_OMITS, with the reason;
  - values files under .ci/chart/invalid-values/ are rejected with the expected message;
  - deploy/manifests/ equals the render with default values;
  - deploy/examples/: SecretProviderClasses against deploy/schemas/, the rest with kubernetes-validate.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "charts" / "akv-csi-provider"
MANIFEST = ROOT / "deploy" / "manifests" / "akv-csi-provider.yaml"
EXAMPLES = ROOT / "deploy" / "examples"
SCHEMAS = ROOT / "deploy" / "schemas"
INVALID_VALUES = ROOT / ".ci" / "chart" / "invalid-values"
MONITORING_SCHEMA = ROOT / ".ci" / "chart" / "monitoring-coreos-com-v1.json"
CLI_RS = ROOT / "provider" / "src" / "cli.rs"

# Oldest and newest Kubernetes versions we claim (Chart.yaml: kubeVersion ">=1.29.0-0").
KUBE_VERSIONS = ("1.29.0", "1.37.0")
RELEASE = "akv-csi-provider"
NAMESPACE = "kube-system"
# Order of kinds in the plain manifests (the order Helm installs them in).
KIND_ORDER = ["ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Service", "DaemonSet",
              "ServiceMonitor", "PodMonitor"]
# The DaemonSet's arguments with default values. Every one but --endpoint must also be the
# binary's default (checked against cli.rs), so the chart changes nothing unless asked to.
DEFAULT_ARGS = {
    "endpoint": "unix:///provider/azure.sock",
    "construct-pem-chain": "true",
    "write-cert-and-key-in-separate-files": "false",
    "log-format-json": "false",
    "v": "0",
    "healthz-port": "8989",
    "healthz-path": "/healthz",
    "healthz-timeout": "5s",
    "prometheus-port": "8898",
    "metrics-max-object-names": "500",
    "cloud-name": "AzurePublicCloud",
    "max-concurrent-fetches": "32",
    "max-concurrent-requests": "64",
    "max-concurrent-per-vault": "32",
    "max-retries": "4",
    "pinned-cache-ttl": "1h",
    "latest-cache-window": "0s",
    "listing-window": "5s",
    "cache-max-mib": "64",
    "max-call-recv-msg-size": "4194304",
    "mount-timeout": "60s",
    "drain-timeout": "20s",
    "token-review": "auto",
    "token-review-cache-ttl": "1m",
}
# Flags of the binary that no chart key sets, and why (linux.extraArgs can still pass them).
CHART_OMITS = {
    "version": "prints the version and exits",
    "metrics-backend": "only Prometheus exists",
    "enable-pprof": "accepted for compatibility, ignored",
    "pprof-port": "accepted for compatibility, ignored",
    "token-proxy-ca-file": "the chart mounts the cluster CA at the binary's default path (identityBinding.mountClusterCA)",
    "imds-endpoint": "fixed Azure address; tests and special hosts use linux.extraArgs",
    "pod-identity-endpoint": "the NMI's fixed node address; special hosts use linux.extraArgs",
    "resolve": "repeatable HOST=IP pairs: linux.extraArgs",
    "kubeconfig": "in the cluster the provider uses its pod's service-account token (tokenReview.enabled); "
                  "a kubeconfig file needs linux.volumes and linux.extraArgs",
}
# The only permission the chart grants (tokenReview.enabled with rbac.install).
TOKEN_REVIEW_RULES = [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}]
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Integer flags whose schema range is deliberately narrower than what clap accepts.
SCHEMA_NARROWER = {
    "v": "klog levels above 10 mean nothing",
    "healthz-port": "port 0 is no port for a probe",
}
INT_BOUNDS = {"u8": (0, 2**8 - 1), "u16": (0, 2**16 - 1), "u32": (0, 2**32 - 1)}
MANIFEST_HEADER = """\
# Plain manifests of the akv-csi-provider chart with its default values: release
# "akv-csi-provider" in namespace kube-system. Generated by `bash .ci/chart.sh --update`
# from deploy/charts/akv-csi-provider; do not edit (CI fails when they drift apart).
# Set the image (linux.image.repository) before applying: it is not published yet.
"""


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, func: Callable[[], None]) -> None:
        try:
            func()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the run goes on
            self.failed.append(name)
            detail = str(exc) if isinstance(exc, CheckFailed) else traceback.format_exc()
            print(f"FAIL {name}\n     " + detail.strip().replace("\n", "\n     "), flush=True)
        else:
            self.passed += 1
            print(f"ok   {name}", flush=True)


class CheckFailed(Exception):
    pass


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def load_values(path: Path | None) -> dict[str, Any] | None:
    # Helm's own YAML reader, so values mean what they mean to `helm install -f`.
    return None if path is None else helm.values_from_yaml(path.read_text())


def render(values: dict[str, Any] | None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def merged_values(values: dict[str, Any] | None) -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def objects_of(manifests: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(template path, object) for every non-empty YAML document of the rendered templates."""
    out = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def plain_manifests(manifests: dict[str, str]) -> str:
    def order(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
        kind = item[1]["kind"]
        return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), item[0])

    parts = [MANIFEST_HEADER]
    docs = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for chunk in re.split(r"^---\s*$", text, flags=re.M):
            if chunk.strip():
                docs.append((path, yaml.safe_load(chunk), chunk.strip("\n")))
    for path, _obj, chunk in sorted(docs, key=lambda d: order((d[0], d[1]))):
        parts.append(f"---\n# Source: {path}\n{chunk}\n")
    return "".join(parts)


# ---------------------------------------------------------------- validation of objects

_monitoring_validator = jsonschema.Draft202012Validator(json.loads(MONITORING_SCHEMA.read_text()))


def validate_object(obj: dict[str, Any], where: str) -> None:
    kind = obj.get("kind")
    if obj.get("apiVersion") == "monitoring.coreos.com/v1":
        errors = sorted(_monitoring_validator.iter_errors(obj), key=lambda e: list(e.path))
        require(not errors, f"{where}: {kind}: " + "; ".join(
            f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors))
        return
    if obj.get("apiVersion") == "secrets-store.csi.x-k8s.io/v1":
        validate_spc(obj, where)
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            raise CheckFailed(f"{where}: {kind} {obj['metadata'].get('name')} is not valid for "
                              f"Kubernetes {version} (strict): {path}: {exc.message}") from None
        except kubernetes_validate.SchemaNotFoundError as exc:
            # Never skip silently: an object nobody validates is a failure.
            raise CheckFailed(f"{where}: {exc.message}") from None


_spc_validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "secretproviderclass-v1.json").read_text()))
_params_validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "azure-parameters.json").read_text()))
_object_validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "azure-object.json").read_text()))
GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}


def schema_errors(validator: jsonschema.Draft202012Validator, instance: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))]


def validate_spc(spc: dict[str, Any], where: str) -> None:
    name = f"{where}: SecretProviderClass {spc.get('metadata', {}).get('name')}"
    errors = schema_errors(_spc_validator, spc)
    require(not errors, f"{name}: " + "; ".join(errors))
    if spc["spec"]["provider"] != "azure":
        return
    params = spc["spec"].get("parameters", {})
    errors = schema_errors(_params_validator, params)
    require(not errors, f"{name}: parameters: " + "; ".join(errors))
    identities = [k for k in ("usePodIdentity", "useVMManagedIdentity", "useAzureTokenProxy")
                  if params.get(k, "").strip() in GO_TRUE]
    require(len(identities) <= 1, f"{name}: at most one of {identities} may be true")
    objects = yaml.safe_load(params["objects"])
    require(isinstance(objects, dict) and isinstance(objects.get("array"), list) and objects["array"],
            f"{name}: objects must be a mapping with a non-empty list `array`")
    files = []
    bulk = False
    for index, entry in enumerate(objects["array"]):
        described = yaml.safe_load(entry) if isinstance(entry, str) else entry
        errors = schema_errors(_object_validator, described)
        require(not errors, f"{name}: objects.array[{index}]: " + "; ".join(errors))
        if "objectNamePrefix" in described or "objectTags" in described:
            bulk = True  # files are known only after listing the vault
        elif described.get("jsonKeys"):
            files.extend(k if isinstance(k, str) else (k.get("alias") or k["key"])
                         for k in described["jsonKeys"])
        else:
            files.append(described.get("objectAlias") or described["objectName"])
    duplicates = sorted({f for f in files if files.count(f) > 1})
    require(not duplicates, f"{name}: several objects write {duplicates}")
    for secret in [] if bulk else spc["spec"].get("secretObjects", []):
        for item in secret["data"]:
            require(item["objectName"] in files,
                    f"{name}: secretObjects {secret['secretName']} names {item['objectName']!r}, "
                    f"which no object writes (files: {files})")


# ---------------------------------------------------------------- the DaemonSet against the values

def binary_flags() -> dict[str, dict[str, Any]]:
    """Long flags of the binary, read from the clap struct in provider/src/cli.rs.

    Each maps to {"type": Rust type, "default": default as a string or None,
    "range": (min, max) for integer flags (value_parser range, else the type's bounds) or None}.
    """
    source = CLI_RS.read_text()
    body = ""
    # Config, and the flag groups it flattens in (the same file).
    for struct in ("pub struct Config", "pub struct Connection"):
        part = source[source.index(struct):]
        body += part[:part.index("\n}\n")] + "\n"
    flags: dict[str, dict[str, Any]] = {}
    for attrs, field, rust_type in re.findall(
            r"((?:#\[arg\([^\]]*\)\]\s*)+)pub (\w+):\s*([^,\n]+),", body):
        long = re.search(r'long\s*=\s*"([^"]+)"', attrs)
        name = long.group(1) if long else field.replace("_", "-")
        default = None
        if text := re.search(r'\bdefault_value\s*=\s*"([^"]*)"', attrs):
            default = text.group(1)
        elif number := re.search(r"\bdefault_value_t\s*=\s*([0-9][0-9_ *]*)", attrs):
            product = 1
            for factor in number.group(1).replace("_", "").split("*"):
                product *= int(factor)
            default = str(product)
        elif variant := re.search(r"\bdefault_value_t\s*=\s*[A-Z]\w*::([A-Z]\w*)", attrs):
            default = re.sub(r"(?<!^)(?=[A-Z])", "-", variant.group(1)).lower()
        bounds = None
        if rust_type.strip() in INT_BOUNDS:
            bounds = INT_BOUNDS[rust_type.strip()]
            ranged = re.search(r"value_parser!\(\w+\)\.range\(([0-9]*)\.\.(=?)([0-9]*)\)", attrs)
            if ranged:
                low, inclusive, high = ranged.groups()
                bounds = (int(low) if low else bounds[0],
                          (int(high) if inclusive else int(high) - 1) if high else bounds[1])
        flags[name] = {"type": rust_type.strip(), "default": default, "range": bounds}
    require(len(flags) > 10, f"could not read the flags from {CLI_RS}")
    return flags


def hms_seconds(value: str) -> int:
    parts = dict((u, int(n)) for n, u in re.findall(r"([0-9]+)([hms])", value))
    return parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)


def check_daemonset(objects: list[tuple[str, dict[str, Any]]], values: dict[str, Any],
                    flags: dict[str, dict[str, Any]]) -> set[str]:
    """Checks the DaemonSet; returns the flags that chart keys (not linux.extraArgs) set."""
    daemonsets = [o for _, o in objects if o["kind"] == "DaemonSet"]
    linux = values["linux"]
    if not linux["enabled"]:
        require(not objects or all(o["kind"] == "ServiceAccount" for _, o in objects),
                f"linux.enabled=false must render no workload, got {[o['kind'] for _, o in objects]}")
        return set()
    require(len(daemonsets) == 1, f"expected one DaemonSet, got {len(daemonsets)}")
    pod = daemonsets[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    args: dict[str, str] = {}
    for arg in container["args"]:
        match = re.fullmatch(r"--?([a-z][-a-z]*)=(.*)", arg, flags=re.S)
        require(match is not None, f"argument {arg!r} is not --flag=value")
        name, value = match.groups()
        require(name in flags, f"argument {arg!r}: the binary has no flag --{name}")
        args[name] = value

    metrics_port = int(values["metricsAddr"].rsplit(":", 1)[1])
    expected = {
        "endpoint": "unix:///provider/azure.sock",
        "construct-pem-chain": str(values["constructPEMChain"]).lower(),
        "write-cert-and-key-in-separate-files": str(values["writeCertAndKeyInSeparateFiles"]).lower(),
        "log-format-json": str(values["logFormatJSON"]).lower(),
        "v": str(values["logVerbosity"]),
        "healthz-port": str(linux["healthzPort"]),
        "healthz-path": linux["healthzPath"],
        "healthz-timeout": linux["healthzTimeout"],
        "prometheus-port": str(metrics_port),
        "metrics-max-object-names": str(values["metricsMaxObjectNames"]),
        "cloud-name": values["cloudName"],
        "max-concurrent-fetches": str(values["maxConcurrentFetches"]),
        "max-concurrent-requests": str(values["maxConcurrentRequests"]),
        "max-concurrent-per-vault": str(values["maxConcurrentPerVault"]),
        "max-retries": str(values["maxRetries"]),
        "pinned-cache-ttl": values["pinnedCacheTTL"],
        "latest-cache-window": values["latestCacheWindow"],
        "listing-window": values["listingWindow"],
        "cache-max-mib": str(values["cacheMaxMiB"]),
        "max-call-recv-msg-size": str(values["maxCallRecvMsgSize"]),
        "mount-timeout": values["mountTimeout"],
        "drain-timeout": values["drainTimeout"],
    }
    review = values["tokenReview"]
    if review["enabled"]:
        expected["token-review"] = "auto"
        expected["token-review-cache-ttl"] = review["cacheTTL"]
    else:
        expected["token-review"] = "off"
    if linux["customUserAgent"]:
        expected["custom-user-agent"] = linux["customUserAgent"]
    if values["caBundle"]["configMapName"]:
        expected["ca-file"] = "/etc/akv-csi-provider/ca/" + values["caBundle"]["key"]
    binding = values["identityBinding"]
    if binding["tokenProxyURL"]:
        expected["token-proxy-url"] = binding["tokenProxyURL"]
    if binding["sniName"]:
        expected["sni-name"] = binding["sniName"]
    from_keys = set(expected) | {"token-proxy-url", "sni-name", "token-review-cache-ttl"}
    for extra in linux["extraArgs"]:
        name, _, value = extra.lstrip("-").partition("=")
        expected[name] = value
    require(args == expected, f"flags differ from the values:\n  rendered {args}\n  expected {expected}")

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    require(ports == {"healthz": linux["healthzPort"], "metrics": metrics_port}, f"container ports {ports}")
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        require(get == {"path": linux["healthzPath"], "port": "healthz"}, f"{probe} {get}")
        require(container[probe]["timeoutSeconds"] > hms_seconds(linux["healthzTimeout"]),
                f"{probe} timeout must exceed healthzTimeout")

    security = container["securityContext"]
    require(security["readOnlyRootFilesystem"] is True, "read-only root filesystem")
    require(security["capabilities"] == {"drop": ["ALL"]}, f"capabilities {security['capabilities']}")
    if linux["privileged"]:
        require(security.get("privileged") is True, "privileged requested")
    else:
        require(security.get("allowPrivilegeEscalation") is False and "privileged" not in security,
                "no privilege escalation")
    require(pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, "seccomp RuntimeDefault")
    require(pod["automountServiceAccountToken"] is review["enabled"],
            "the service-account token is mounted exactly when tokenReview.enabled (the in-cluster config of the review)")
    require(pod["hostNetwork"] is linux["hostNetwork"], "hostNetwork")
    want_dns = linux["dnsPolicy"] or ("ClusterFirstWithHostNet" if linux["hostNetwork"] else None)
    require(pod.get("dnsPolicy") == want_dns,
            f"dnsPolicy {pod.get('dnsPolicy')!r}, want {want_dns!r} (kubernetes.default.svc must resolve with hostNetwork)")
    require(pod["terminationGracePeriodSeconds"] > hms_seconds(values["drainTimeout"]),
            "terminationGracePeriodSeconds must exceed drainTimeout")
    require(pod["nodeSelector"].get("kubernetes.io/os") == "linux", "Linux nodes only")

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    require(mounts.get("providers-dir") == "/provider", "socket directory mounted at /provider")
    require(volumes["providers-dir"]["hostPath"]["path"] == linux["providersDir"],
            "the socket directory is linux.providersDir on the node")
    require(container["resources"] == linux["resources"], "resources as given")
    if review["enabled"]:
        # The ServiceAccount admission plugin leaves a container that already mounts this path
        # without its token, and the service-account volume holds ca.crt there anyway.
        taken = sorted(name for name, path in mounts.items() if path.rstrip("/") == SERVICE_ACCOUNT_DIR)
        require(not taken, f"with tokenReview.enabled no volume of ours may be mounted at {SERVICE_ACCOUNT_DIR}: {taken}")
        require("cluster-ca" not in volumes, "no kube-root-ca.crt volume with tokenReview.enabled")
    elif binding["mountClusterCA"]:
        require(mounts.get("cluster-ca") == SERVICE_ACCOUNT_DIR,
                "the cluster CA at the path the binary reads by default")
        require(volumes["cluster-ca"]["configMap"] == {"name": "kube-root-ca.crt", "optional": True,
                                                       "items": [{"key": "ca.crt", "path": "ca.crt"}]},
                "the cluster CA from kube-root-ca.crt, ca.crt only, optional (the pod starts without it)")
    else:
        require("cluster-ca" not in mounts, "no cluster CA mounted when mountClusterCA is false")
    return from_keys


def check_token_review_rbac(objects: list[tuple[str, dict[str, Any]]], values: dict[str, Any]) -> None:
    """A ClusterRole with TOKEN_REVIEW_RULES bound to the provider's ServiceAccount, exactly when
    the pods run with tokenReview.enabled and rbac.install; no other RBAC object ever."""
    rbac = [o for _, o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    want = values["linux"]["enabled"] and values["tokenReview"]["enabled"] and values["rbac"]["install"]
    if not want:
        require(not rbac, f"no RBAC objects without tokenReview.enabled and rbac.install, got "
                          f"{[(o['kind'], o['metadata']['name']) for o in rbac]}")
        return
    require(sorted(o["kind"] for o in rbac) == ["ClusterRole", "ClusterRoleBinding"],
            f"want one ClusterRole and one ClusterRoleBinding, got {[o['kind'] for o in rbac]}")
    (role,) = [o for o in rbac if o["kind"] == "ClusterRole"]
    (binding,) = [o for o in rbac if o["kind"] == "ClusterRoleBinding"]
    (daemonset,) = [o for _, o in objects if o["kind"] == "DaemonSet"]
    name = f"{daemonset['metadata']['name']}-{NAMESPACE}-token-review"
    for obj in (role, binding):
        require(obj["metadata"]["name"] == name, f"{obj['kind']} {obj['metadata']['name']}, want {name}")
    require("aggregationRule" not in role, "the ClusterRole is not aggregated")
    require(role["rules"] == TOKEN_REVIEW_RULES, f"ClusterRole rules {role['rules']}, want only {TOKEN_REVIEW_RULES}")
    require(binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            f"roleRef {binding['roleRef']}")
    account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
    require(binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
            f"subjects {binding['subjects']}, want only the pods' ServiceAccount {NAMESPACE}/{account}")


def daemonset_args(objects: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    (daemonset,) = [o for _, o in objects if o["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return dict(re.fullmatch(r"--?([a-z][-a-z]*)=(.*)", a, flags=re.S).groups() for a in container["args"])


def check_default_args(objects: list[tuple[str, dict[str, Any]]], flags: dict[str, dict[str, Any]]) -> None:
    """Default values: exactly DEFAULT_ARGS, and each the binary's own default (but --endpoint)."""
    args = daemonset_args(objects)
    differ = {name: (args.get(name), DEFAULT_ARGS.get(name)) for name in args.keys() | DEFAULT_ARGS.keys()
              if args.get(name) != DEFAULT_ARGS.get(name)}
    require(not differ, f"default args differ from DEFAULT_ARGS (rendered, expected): {differ}")
    differ = {name: (value, flags[name]["default"]) for name, value in args.items()
              if name != "endpoint" and value != flags[name]["default"]}
    require(not differ, f"chart default != binary default (chart, binary): {differ}")


def schema_flag_properties() -> dict[str, tuple[str, dict[str, Any]]]:
    """Flag -> (values key, resolved schema) for schema properties described as "--flag ..."."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def resolve(prop: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in prop:
            target = schema
            for part in prop["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return {**resolve(target), **{k: v for k, v in prop.items() if k != "$ref"}}
        return prop

    out = {}
    for prefix, props in (("", schema["properties"]), ("linux.", schema["properties"]["linux"]["properties"]),
                          ("identityBinding.", schema["properties"]["identityBinding"]["properties"]),
                          ("tokenReview.", schema["properties"]["tokenReview"]["properties"])):
        for key, prop in props.items():
            match = re.match(r"--?([a-z][-a-z]*)", prop.get("description", ""))
            if match:
                out[match.group(1)] = (prefix + key, resolve(prop))
    return out


def check_schema_bounds(flags: dict[str, dict[str, Any]]) -> None:
    problems = []
    for flag, (key, prop) in schema_flag_properties().items():
        if flag not in flags:
            problems.append(f"{key}: the binary has no flag --{flag}")
            continue
        bounds = flags[flag]["range"]
        if bounds is None:
            continue
        if prop.get("type") != "integer":
            problems.append(f"{key}: --{flag} is a {flags[flag]['type']}, the schema says {prop.get('type')}")
            continue
        schema_bounds = (prop.get("minimum"), prop.get("maximum"))
        if flag in SCHEMA_NARROWER:
            if None in schema_bounds or schema_bounds[0] < bounds[0] or schema_bounds[1] > bounds[1]:
                problems.append(f"{key}: schema {schema_bounds} must lie within the binary's {bounds}")
        elif schema_bounds != bounds:
            problems.append(f"{key}: schema bounds {schema_bounds}, the binary accepts {bounds} (--{flag})")
    require(not problems, "; ".join(problems))


# ---------------------------------------------------------------- main

def yaml_files() -> list[Path]:
    files = [ROOT / ".yamllint.yaml", CHART / "Chart.yaml", CHART / "values.yaml"]
    for folder in (CHART / "ci", INVALID_VALUES, EXAMPLES, MANIFEST.parent):
        files += sorted(folder.glob("*.yaml"))
    return files


def main() -> int:
    update = "--update" in sys.argv[1:]
    results = Results()
    shipped = sorted(set(kv_utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
    print(f"helm-python-sdk {helm.__version__} (Helm {helm.helm_sdk_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__} (schemas {shipped[0]} to {shipped[-1]}), "
          f"jsonschema {importlib.metadata.version('jsonschema')}, "
          f"yamllint {importlib.metadata.version('yamllint')}; "
          f"Kubernetes versions checked: {', '.join(KUBE_VERSIONS)}", flush=True)
    missing = [v for v in KUBE_VERSIONS if v not in shipped]
    if missing:
        print(f"FAIL kubernetes-validate ships no schemas for {missing}: the check would be offline-impossible")
        return 1

    flags_holder: dict[str, dict[str, dict[str, Any]]] = {}
    results.check("binary flags read from provider/src/cli.rs",
                  lambda: flags_holder.setdefault("flags", binary_flags()))
    flags = flags_holder.get("flags", {})
    results.check("values.schema.json bounds the integer flags as clap does",
                  lambda: check_schema_bounds(flags))
    set_by_chart: set[str] = set()

    # Values files: defaults first, then the chart's ci/ files.
    for values_file in [None, *sorted((CHART / "ci").glob("*.yaml"))]:
        label = values_file.name if values_file else "default values"
        values = load_values(values_file)

        for version in KUBE_VERSIONS:
            def lint(version: str = version) -> None:
                report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
                problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
                require(not problems, f"helm lint --strict: {problems}")
            results.check(f"lint --strict, {label}, Kubernetes {version}", lint)

        def render_and_validate(values: dict[str, Any] | None = values, label: str = label) -> None:
            objects = objects_of(render(values))
            for path, obj in objects:
                validate_object(obj, f"{label}: {path}")
            merged = merged_values(values)
            set_by_chart.update(check_daemonset(objects, merged, flags))
            check_token_review_rbac(objects, merged)
            if values is None:
                check_default_args(objects, flags)
        results.check(f"render + kubernetes-validate --strict + flags/hardening, {label}", render_and_validate)

    def every_flag_considered() -> None:
        unset = sorted(set(flags) - set_by_chart - set(CHART_OMITS))
        require(not unset, f"flags of the binary that no chart key sets (add a key, or add them to "
                           f"CHART_OMITS with the reason): {unset}")
        both = sorted(set_by_chart & set(CHART_OMITS))
        require(not both, f"in CHART_OMITS but set by a chart key: {both}")
    results.check("every flag of the binary is a chart key or deliberately left out", every_flag_considered)

    # Values that must be rejected, each with the message it must fail with.
    for invalid in sorted(INVALID_VALUES.glob("*.yaml")):
        def rejected(invalid: Path = invalid) -> None:
            expect = re.match(r"# expect: (.+)", invalid.read_text())
            require(expect is not None, "first line must be `# expect: <part of the error>`")
            try:
                render(load_values(invalid))
            except helm.HelmError as exc:
                require(expect.group(1) in str(exc), f"rejected, but not with {expect.group(1)!r}: {exc}")
            else:
                raise CheckFailed("these values were accepted")
        results.check(f"rejects {invalid.name}", rejected)

    # The plain manifests are the default render.
    def manifests_in_sync() -> None:
        text = plain_manifests(render(None))
        for _, obj in objects_of({"plain": text}):
            validate_object(obj, MANIFEST.name)
        if update:
            MANIFEST.parent.mkdir(parents=True, exist_ok=True)
            MANIFEST.write_text(text)
            print(f"     wrote {MANIFEST.relative_to(ROOT)}")
            return
        current = MANIFEST.read_text() if MANIFEST.exists() else ""
        if current != text:
            import difflib
            diff = "".join(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                str(MANIFEST.relative_to(ROOT)), "rendered from the chart"))
            raise CheckFailed(f"{MANIFEST.relative_to(ROOT)} is out of date; run `bash .ci/chart.sh --update`\n{diff}")
    results.check("deploy/manifests in sync with the chart", manifests_in_sync)

    # Example SecretProviderClasses and the objects around them.
    for example in sorted(EXAMPLES.glob("*.yaml")):
        def example_valid(example: Path = example) -> None:
            docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
            require(any(d["kind"] == "SecretProviderClass" for d in docs), "no SecretProviderClass")
            for doc in docs:
                validate_object(doc, example.name)
        results.check(f"example {example.name}", example_valid)

    def yamllint() -> None:
        binary = Path(sys.executable).parent / "yamllint"
        files = [str(f.relative_to(ROOT)) for f in yaml_files()]
        run = subprocess.run([str(binary), "--strict", "-c", ".yamllint.yaml", *files],
                             cwd=ROOT, capture_output=True, text=True)
        require(run.returncode == 0, run.stdout + run.stderr)
    results.check(f"yamllint --strict ({len(yaml_files())} files)", yamllint)

    print(f"chart: {results.passed} passed, {len(results.failed)} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
