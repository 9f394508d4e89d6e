#!/usr/bin/env python3
"""Every pod that is configured to reach a datastore is let through by the network policies
(scripts/pod_runner.py runs the pods but does not model NetworkPolicies).

    flows.py RENDERED.yaml    exit 1 and one line per missing flow

A container with REDIS_URL, DATABASE_URL or QDRANT_URL in its env must be selected by the
`egress-<store>` policy, and, where the datastore is bundled, be a peer in the datastore's own
ingress policy.
"""
import sys

import yaml

STORES = {"REDIS_URL": "redis", "DATABASE_URL": "postgresql", "QDRANT_URL": "qdrant"}


def selects(selector, labels):
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        values = expr.get("values") or []
        if expr["operator"] == "In" and labels.get(expr["key"]) not in values:
            return False
        if expr["operator"] == "NotIn" and labels.get(expr["key"]) in values:
            return False
        if expr["operator"] == "Exists" and expr["key"] not in labels:
            return False
    return True


def main(path):
    objects = [o for o in yaml.safe_load_all(open(path)) if o]
    policies = {o["metadata"]["name"].removeprefix("octollm-"): o for o in objects if o["kind"] == "NetworkPolicy"}
    problems = []
    for w in objects:
        if w["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            continue
        template = w["spec"]["template"]
        labels = template["metadata"].get("labels") or {}
        wanted = {STORES[e["name"]] for c in template["spec"]["containers"] for e in c.get("env") or []
                  if e["name"] in STORES}
        for store in sorted(wanted):
            where = f"{w['kind']}/{w['metadata']['name']} reaches {store}"
            egress = policies.get(f"egress-{store}")
            if egress is None or not selects(egress["spec"]["podSelector"], labels):
                problems.append(f"{where}, but egress-{store} does not select it")
            own = policies.get(store)
            if own is not None:
                peers = [p.get("podSelector") for rule in own["spec"].get("ingress") or [] for p in rule.get("from") or []]
                if not any(p is not None and selects(p, labels) for p in peers):
                    problems.append(f"{where}, but {store}'s ingress policy does not let it in")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
