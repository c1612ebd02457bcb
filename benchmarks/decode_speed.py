"""Batched masked grammar decoding vs a per-sample stack loop on the same random logits.

The reference is the straightforward approach of the Grammar VAE code: for each
sample, keep a Python list as the stack, and at each step mask the logits row of
that sample with the top non-terminal's rules (numpy) and take the argmax. Both
use the same cut rule (a sample whose pending non-terminals outnumber the steps
left cannot finish: it is stopped and padded), so every output row must match.

Usage:
    python benchmarks/decode_speed.py --n 10000 [--grammar smiles] [--ref-n N] [--threads T]

Prints ONE JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discrete_rae.grammar import Grammar  # noqa: E402
from nltk.grammar import Nonterminal  # noqa: E402


def reference_decode(grammar: Grammar, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample greedy decoding. ``logits`` [B, L, R] -> (ids [B, L], finished [B])."""
    B, L, _ = logits.shape
    masks = grammar.masks.numpy()
    nt_index = {name: i for i, name in enumerate(grammar.nonterminals)}
    pushes = []
    for r, p in enumerate(grammar.productions):
        if r == grammar.pad_index:
            pushes.append([])
        else:
            pushes.append([nt_index[s.symbol()] for s in reversed(p.rhs()) if isinstance(s, Nonterminal)])
    start = nt_index[grammar.start]
    pad = grammar.pad_index
    ids = np.full((B, L), pad, dtype=np.int64)
    finished = np.zeros(B, dtype=bool)
    for b in range(B):
        stack = [start]
        row = logits[b]
        for t in range(L):
            top = stack.pop()
            r = int(np.where(masks[top], row[t], -np.inf).argmax())
            ids[b, t] = r
            stack.extend(pushes[r])
            if not stack:
                finished[b] = True
                break
            if len(stack) > L - t - 1:  # cannot finish any more
                break
    return ids, finished


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="batch size")
    ap.add_argument("--grammar", default="smiles")
    ap.add_argument("--length", type=int, default=None, help="decode steps (default: grammar max_length)")
    ap.add_argument("--ref-n", type=int, default=None, help="samples decoded by the reference (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each decoder; the best time is reported")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = Grammar.builtin(args.grammar)
    L = args.length or g.max_length
    gen = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(args.n, L, g.n_rules, generator=gen)

    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        res = g.decode_logits(logits, greedy=True)
        times.append(time.perf_counter() - t0)
    batched_s = min(times)

    ref_n = min(args.ref_n or args.n, args.n)
    ref_times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        ref_ids, ref_fin = reference_decode(g, logits[:ref_n].numpy())
        ref_times.append(time.perf_counter() - t0)
    ref_s = min(ref_times)

    identical = bool(
        np.array_equal(res.ids[:ref_n].numpy(), ref_ids) and np.array_equal(res.finished[:ref_n].numpy(), ref_fin)
    )
    batched_rate = args.n / batched_s
    ref_rate = ref_n / ref_s
    out = {
        "benchmark": "decode_speed",
        "grammar": g.name,
        "n": args.n,
        "steps": L,
        "n_rules": g.n_rules,
        "torch_threads": torch.get_num_threads(),
        "batched_s": round(batched_s, 4),
        "batched_samples_per_s": round(batched_rate, 1),
        "reference_n": ref_n,
        "reference_s": round(ref_s, 4),
        "reference_samples_per_s": round(ref_rate, 1),
        "ratio": round(batched_rate / ref_rate, 2),
        "identical": identical,
        "finished_fraction": round(float(res.finished.float().mean()), 4),
        "mean_length": round(float(res.lengths.float().mean()), 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
