#!/usr/bin/env python3
"""Compares two directories written by scripts/golden.sh: every file byte for byte, except
that JSON (and JSON-lines) files are compared without their timing fields (any key naming
seconds: "seconds", "seconds_per_image", "train_seconds"), Markdown tables without their timing
columns (the last, and a "train s" one), and burnpack weights not
at all (their bytes carry burn's random parameter ids; the weights are compared through what
they produce: samples, evaluations, classifier accuracy). Prints each difference; exit status 1
if any."""
import json
import os
import sys

IGNORED_KEYS = {"seconds", "seconds_per_image"}
SKIPPED = {".lock", "classifier.stderr", "train.stdout"}


def strip(v, root):
    if isinstance(v, dict):
        return {
            k: strip(x, root)
            for k, x in v.items()
            if k not in IGNORED_KEYS and "seconds" not in k
        }
    if isinstance(v, list):
        return [strip(x, root) for x in v]
    if isinstance(v, str):
        return v.replace(root, "<root>")
    return v


def load(path, root):
    text = open(path, encoding="utf-8").read()
    if path.endswith(".jsonl"):
        return [strip(json.loads(l), root) for l in text.splitlines() if l.strip()]
    return strip(json.loads(text), root)


def files(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), root)
            if n not in SKIPPED and not n.endswith(".bpk") and not rel.startswith("files" + os.sep):
                out.add(rel)
    return out


def main(a, b):
    fa, fb = files(a), files(b)
    bad = 0
    for rel in sorted(fa ^ fb):
        print(f"only in {'first' if rel in fa else 'second'}: {rel}")
        bad += 1
    for rel in sorted(fa & fb):
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if rel.endswith((".json", ".jsonl")):
            same = load(pa, os.path.abspath(a)) == load(pb, os.path.abspath(b))
        elif rel.endswith(".md"):
            # Markdown tables carry timings in their last column, and the benchmark's also in a
            # "train s" column: compare without them.
            def cut(p):
                rows = [l.rstrip("\n").split("|") for l in open(p, encoding="utf-8")]
                header = next((r for r in rows if any(c.strip() == "train s" for c in r)), None)
                drop = {i for i, c in enumerate(header or []) if c.strip() == "train s"}
                return [[c for i, c in enumerate(r[:-2]) if i not in drop] for r in rows]
            same = cut(pa) == cut(pb)
        else:
            same = open(pa, "rb").read() == open(pb, "rb").read()
        if not same:
            print(f"differs: {rel}")
            bad += 1
    print(f"{len(fa & fb)} files compared, {bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
