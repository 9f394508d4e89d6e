#!/usr/bin/env python3
"""A render with managed datastores keeps nothing of the bundled ones.

    external_datastores.py RENDERED.yaml    exit 1 and one line per problem

No StatefulSet; no Service, ServiceAccount or policy for PostgreSQL, Redis or Qdrant; each
datastore's egress policy exists and sends only to IP blocks on one port.
"""
import sys

import yaml

STORES = ("postgresql", "redis", "qdrant")


def main(path):
    objects = [o for o in yaml.safe_load_all(open(path)) if o]
    problems = []
    egress = {}
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        label = obj["metadata"].get("labels", {}).get("app.kubernetes.io/name", "")
        if kind == "StatefulSet":
            problems.append(f"StatefulSet/{name} is still rendered")
        if kind in ("Service", "ServiceAccount", "NetworkPolicy") and (label in STORES or name.removeprefix("octollm-") in STORES):
            problems.append(f"{kind}/{name} of a bundled datastore is still rendered")
        if kind == "NetworkPolicy":
            for store in STORES:
                if name.endswith(f"egress-{store}"):
                    egress[store] = obj
    for store in STORES:
        policy = egress.get(store)
        if policy is None:
            problems.append(f"no egress policy for {store}")
            continue
        rules = policy["spec"]["egress"]
        peers = [peer for rule in rules for peer in rule["to"]]
        if not peers or any(set(peer) != {"ipBlock"} for peer in peers):
            problems.append(f"egress-{store} sends to something other than IP blocks: {peers}")
        if any(len(rule.get("ports", [])) != 1 for rule in rules):
            problems.append(f"egress-{store} is not limited to one port")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
