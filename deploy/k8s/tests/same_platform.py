#!/usr/bin/env python3
"""The Kustomize overlay and the Helm chart describe the same platform.

    same_platform.py KUSTOMIZE.yaml HELM.yaml    exit 1 and one line per difference

Objects are matched by kind and component (the `app.kubernetes.io/name` label, without the
`octollm-` prefix), since the chart prefixes names with the release. Compared: which
workloads, Services, HPAs and PDBs exist; each workload's container arguments, resources,
probes, security context, environment variable names, secret references and volume mounts,
its init containers (image, command, resources, security context, mounts) and its volumes; HPA bounds,
metrics and behaviour; PDB budgets; Service ports. Replica counts: the chart leaves them to
the HPA, so a Deployment's Kustomize replicas must equal the chart's HPA minimum.
"""
import sys

import yaml

COMPARED = {"Deployment", "DaemonSet", "StatefulSet", "Job", "Service", "HorizontalPodAutoscaler",
            "PodDisruptionBudget"}


def component(obj):
    labels = obj["metadata"].get("labels", {})
    name = labels.get("app.kubernetes.io/name", obj["metadata"]["name"])
    return name.removeprefix("octollm-")


def load(path):
    objects = {}
    for obj in yaml.safe_load_all(open(path)):
        if obj and obj["kind"] in COMPARED:
            objects[(obj["kind"], component(obj))] = obj
    return objects


def init_view(c):
    """An init container: what it runs, from which image, with what, mounting what."""
    return {
        "name": c["name"],
        "image": c.get("image"),
        "command": c.get("command"),
        "args": c.get("args"),
        "resources": c.get("resources"),
        "securityContext": c.get("securityContext"),
        "volumeMounts": sorted((m["name"], m["mountPath"], m.get("readOnly", False))
                               for m in c.get("volumeMounts", [])),
    }


def volume_view(v):
    kind = next(k for k in v if k != "name")
    return (v["name"], kind, str((v[kind] or {}).get("sizeLimit", "")))


def container_view(obj):
    spec = obj["spec"]["template"]["spec"]
    view = []
    for c in spec["containers"]:
        env = c.get("env") or []
        view.append({
            "args": c.get("args"),
            "resources": c.get("resources"),
            "probes": {p: (c.get(p) or {}).get("httpGet", (c.get(p) or {}).get("exec"))
                       for p in ("livenessProbe", "readinessProbe")},
            "securityContext": c.get("securityContext"),
            "ports": sorted(p["containerPort"] for p in c.get("ports", [])),
            "env": sorted(e["name"] for e in env),
            "secretKeys": sorted(e["valueFrom"]["secretKeyRef"]["key"] for e in env
                                 if "secretKeyRef" in e.get("valueFrom", {})),
            "volumeMounts": sorted((m["name"], m["mountPath"], m.get("readOnly", False))
                                   for m in c.get("volumeMounts", [])),
        })
    return {"containers": view, "initContainers": [init_view(c) for c in spec.get("initContainers", [])],
            "volumes": sorted(volume_view(v) for v in spec.get("volumes", [])),
            "podSecurityContext": spec.get("securityContext")}


def view(obj):
    kind, spec = obj["kind"], obj["spec"]
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        return container_view(obj)
    if kind == "Service":
        return sorted((p["name"], p["port"]) for p in spec["ports"])
    if kind == "HorizontalPodAutoscaler":
        return {k: spec[k] for k in ("minReplicas", "maxReplicas", "metrics", "behavior")}
    return {k: v for k, v in spec.items() if k != "selector"}


def main(kustomize_path, helm_path):
    kustomized, helmed = load(kustomize_path), load(helm_path)
    problems = []
    for key in sorted(set(kustomized) | set(helmed)):
        if key not in helmed:
            problems.append(f"{key[0]}/{key[1]}: only in Kustomize")
        elif key not in kustomized:
            problems.append(f"{key[0]}/{key[1]}: only in the Helm chart")
        elif view(kustomized[key]) != view(helmed[key]):
            problems.append(f"{key[0]}/{key[1]}: differs\n  kustomize: {view(kustomized[key])}\n"
                            f"  helm:      {view(helmed[key])}")
    for (kind, name), obj in kustomized.items():
        hpa = helmed.get(("HorizontalPodAutoscaler", name))
        if kind == "Deployment" and hpa and obj["spec"].get("replicas") != hpa["spec"]["minReplicas"]:
            problems.append(f"Deployment/{name}: Kustomize replicas {obj['spec'].get('replicas')} "
                            f"!= chart HPA minimum {hpa['spec']['minReplicas']}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
