"""Parse throughput of Grammar.parse vs nltk.ChartParser on the same grammar and strings.

Both parsers see the same randomly drawn strings (seeded); nltk is timed on the
first ``--nltk-n`` of them (it manages only a few dozen SMILES per second), our
parser on all ``--n``. ``identical`` is true when every sequence nltk produced
equals ours (index of each production of nltk's first tree, in pre-order).

Usage:
    python benchmarks/parse_speed.py --data ../shared/data/zinc/valid.txt --n 2000
    python benchmarks/parse_speed.py --data train.csv.gz --n 20000 --nltk-n 200 --workers 2

Files: one string per line, plain or .gz; a first line equal to SMILES is skipped.
Prints ONE JSON line at the end.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

import nltk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discrete_rae.grammar import Grammar  # noqa: E402


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text or .gz file, without a 'SMILES' header."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        lines = [line.strip() for line in fh]
    lines = [line for line in lines if line]
    if lines and lines[0].upper() == "SMILES":
        lines = lines[1:]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000, help="strings parsed by our parser")
    ap.add_argument("--nltk-n", type=int, default=None, help="strings parsed by nltk (default: all --n)")
    ap.add_argument("--grammar", default="smiles", help="builtin name or path to a .cfg file")
    ap.add_argument("--workers", type=int, default=1, help="also time parse_many with this many processes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    g = Grammar.from_file(args.grammar) if args.grammar.endswith(".cfg") else Grammar.builtin(args.grammar)
    lines = read_lines(args.data)
    rng = random.Random(args.seed)
    texts = rng.sample(lines, min(args.n, len(lines)))
    nltk_n = min(args.nltk_n or len(texts), len(texts))

    g.lr_info  # build the tables outside the timed region  # noqa: B018
    t0 = time.perf_counter()
    ours: list[list[int] | None] = []
    n_fail = 0
    for s in texts:
        try:
            ours.append(g.parse(s))
        except ValueError:
            ours.append(None)
            n_fail += 1
    ours_s = time.perf_counter() - t0

    parser = nltk.ChartParser(g.cfg)
    index = {p: i for i, p in enumerate(g.productions)}
    t0 = time.perf_counter()
    ref: list[list[int] | None] = []
    for s in texts[:nltk_n]:
        tree = next(parser.parse(g.tokenize(s)), None)
        ref.append(None if tree is None else [index[p] for p in tree.productions()])
    nltk_s = time.perf_counter() - t0
    identical = all(a == b for a, b in zip(ours[:nltk_n], ref))
    ours_rate = len(texts) / ours_s
    nltk_rate = nltk_n / nltk_s

    out = {
        "benchmark": "parse_speed",
        "grammar": g.name,
        "data": str(args.data),
        "n": len(texts),
        "failures": n_fail,
        "ours_s": round(ours_s, 4),
        "ours_per_s": round(ours_rate, 1),
        "nltk_n": nltk_n,
        "nltk_s": round(nltk_s, 4),
        "nltk_per_s": round(nltk_rate, 2),
        "ratio": round(ours_rate / nltk_rate, 1),
        "identical": identical,
        "max_length_seen": max((len(x) for x in ours if x is not None), default=0),
    }
    if args.workers > 1:
        t0 = time.perf_counter()
        res = g.parse_many(texts, workers=args.workers, progress=False)
        many_s = time.perf_counter() - t0
        same = all(list(res.sequence(k)) == ours[i] for k, i in enumerate(res.ok_index))
        out.update(
            {
                "parse_many_workers": args.workers,
                "parse_many_s": round(many_s, 4),
                "parse_many_per_s": round(len(texts) / many_s, 1),
                "parse_many_identical": bool(same and len(res) == len(texts) - n_fail),
            }
        )
    # timings depend on what else runs on the machine: record its load
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
