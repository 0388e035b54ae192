#!/usr/bin/env python3
"""Check kefu's tokenizer and model against a reference file by hand.

    python3 scripts/check-reference.py ../shared/reference/me5_reference.jsonl \
        [--kefu target/release/kefu] [--model multilingual-e5-small]

The reference rows are {"set", "prefix", "text", "token_ids", "embedding"}, made by
another engine for `prefix + text`. For every row this runs `kefu embed` (the
prefix decides --kind) and prints, per set, how many token-id sequences match
exactly and the lowest and mean cosine of the vectors, then each mismatch.
Exit status 1 if any realistic row (set != "stress") has different ids or a
cosine below 0.999. Standard library only.
"""
import argparse
import json
import math
import subprocess
import sys
from collections import defaultdict

KINDS = {"query: ": "query", "passage: ": "passage"}


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference")
    ap.add_argument("--kefu", default="target/release/kefu")
    ap.add_argument("--model", default="multilingual-e5-small")
    args = ap.parse_args()

    rows = [json.loads(line) for line in open(args.reference, encoding="utf-8")]
    for prefix, kind in KINDS.items():
        batch = [r for r in rows if r["prefix"] == prefix]
        out = subprocess.run(
            [args.kefu, "embed", "--kind", kind, "--model", args.model, "--"]
            + [r["text"] for r in batch],
            check=True, capture_output=True, text=True,
        ).stdout.splitlines()
        for r, line in zip(batch, out):
            got = json.loads(line)
            r["got_ids"] = got["token_ids"]
            r["cos"] = cosine(got["embedding"], r["embedding"])

    by_set = defaultdict(list)
    for r in rows:
        by_set[r["set"]].append(r)
    bad = False
    print(f"{'set':<14}{'rows':>5}{'ids equal':>11}{'min cos':>10}{'mean cos':>10}")
    for name, rs in by_set.items():
        same = sum(r["got_ids"] == r["token_ids"] for r in rs)
        coss = [r["cos"] for r in rs]
        print(f"{name:<14}{len(rs):>5}{same:>11}{min(coss):>10.5f}{sum(coss)/len(coss):>10.5f}")
    for r in rows:
        if r["got_ids"] != r["token_ids"] or r["cos"] < 0.999:
            realistic = r["set"] != "stress"
            bad |= realistic
            print(f"\n{'MISMATCH' if realistic else 'stress'} [{r['set']}] {r['prefix']!r}{r['text'][:60]!r} cos={r['cos']:.5f}")
            print(f"  reference: {r['token_ids']}")
            print(f"  kefu:      {r['got_ids']}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
