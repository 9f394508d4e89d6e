#!/usr/bin/env python3
"""Policy checks over rendered Kubernetes manifests (issue 5, acceptance 2).

    policy.py RENDERED.yaml...      exit 1 and one line per violation

Every container (and init container) runs as non-root with a read-only root file system,
no privilege escalation and every capability dropped, and has CPU and memory requests and
limits; every image has a pinned tag (no `:latest`, no tagless image); every Deployment and
DaemonSet container (init containers aside: they run to completion first) has liveness and
readiness probes on the paths of SPEC §3; no manifest
carries a secret value (no Secret with data, no literal env value under a secret-looking name).
"""
import re
import sys

import yaml

WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob"}
# SPEC §3: the orchestrator's probes, and every other service's.
PROBES = {
    "orchestrator": ("/health/live", "/health/ready"),
}
DEFAULT_PROBES = ("/health", "/ready")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|REDIS_URL|CREDENTIAL)", re.I)


def pod_spec(obj):
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return spec["template"]["spec"]


def check(obj, where):
    problems = []
    kind = obj.get("kind")
    if kind == "Secret" and (obj.get("data") or obj.get("stringData")):
        problems.append(f"{where}: a Secret with values is committed")
    if kind not in WORKLOADS:
        return problems
    spec = pod_spec(obj)
    pod_ctx = spec.get("securityContext", {})
    # Init containers run to completion before the pod starts (no probes: Kubernetes refuses
    # them), except sidecars (restartPolicy Always), which serve like the main containers.
    serving = spec.get("containers", []) + [c for c in spec.get("initContainers", [])
                                            if c.get("restartPolicy") == "Always"]
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    for c in containers:
        at = f"{where} container {c.get('name')}"
        ctx = c.get("securityContext", {})
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if non_root is not True or uid in (None, 0):
            problems.append(f"{at}: must run as non-root with a non-zero runAsUser")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: root file system is not read-only")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if ctx.get("privileged"):
            problems.append(f"{at}: privileged")
        if "ALL" not in (ctx.get("capabilities", {}).get("drop") or []):
            problems.append(f"{at}: does not drop ALL capabilities")
        if ctx.get("capabilities", {}).get("add"):
            problems.append(f"{at}: adds capabilities")
        res = c.get("resources", {})
        for side in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(side) or {}):
                    problems.append(f"{at}: no {r} {side[:-1]}")
        image = c.get("image", "")
        name_part = image.rsplit("/", 1)[-1]
        if "@" not in image and (":" not in name_part or name_part.endswith(":latest")):
            problems.append(f"{at}: image {image!r} is not pinned to a tag")
        for env in c.get("env", []) or []:
            if "value" in env and SECRET_NAME.search(env["name"]) and env["value"]:
                problems.append(f"{at}: env {env['name']} holds a literal value (use a secretKeyRef)")
        if kind in ("Deployment", "DaemonSet") and any(c is s for s in serving):
            # The component label (the Helm chart prefixes object names with the release).
            app = obj["metadata"].get("labels", {}).get("app.kubernetes.io/name", obj["metadata"]["name"])
            live, ready = PROBES.get(app, DEFAULT_PROBES)
            for probe, path in (("livenessProbe", live), ("readinessProbe", ready)):
                got = (c.get(probe) or {}).get("httpGet", {}).get("path")
                if got != path:
                    problems.append(f"{at}: {probe} path is {got!r}, expected {path!r}")
    return problems


def main(paths):
    problems = []
    count = 0
    for path in paths:
        with open(path) as f:
            for obj in yaml.safe_load_all(f):
                if not obj:
                    continue
                count += 1
                where = f"{path}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
                problems += check(obj, where)
    for p in problems:
        print(p)
    if count == 0:
        print("no objects")
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
