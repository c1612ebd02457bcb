"""Batched masked grammar decoding vs a per-sample stack loop on the same random logits.

The reference is the straightforward approach of the Grammar VAE code: for each
sample, keep a Python list as the stack, and at each step mask the logits row of
that sample with the top non-terminal's rules (numpy) and take the argmax. Both
use the same cut rule (a sample whose pending non-terminals outnumber the steps
left cannot finish: it is stopped and padded), so every output row must match.
The numpy loop is the main (stronger) reference; the same loop written with torch
ops per row is timed on a subset too. Wall and CPU times are reported, with the
machine's load average, since other processes disturb the timings.

With ``--constrained`` the batched side is the grammar codec's constrained decoder (length,
ring-closure and chemistry masks: ``GrammarCodec.decode_logits``, i.e.
``discrete_rae.grammar.constrained.decode_states`` over ``ChemState``) on the compact SMILES
grammar, Kekule mode, and the reference is the per-sample pure-Python decoder of
``discrete_rae.grammar.chem_reference`` (the same constraints, one sample at a time, the test
oracle), which stops each sample as soon as it is done. Wall and CPU (this process) times are
reported for both; the two alternate, so a changing load hits both alike.

Usage:
    python benchmarks/decode_speed.py --n 10000 [--grammar smiles] [--ref-n N] [--threads T]
    python benchmarks/decode_speed.py --constrained --n 10000 --length 90 --ref-n 1000

Prints ONE JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
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


def reference_decode_torch(grammar: Grammar, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same per-sample loop written with torch ops on each row (a naive port)."""
    B, L, _ = logits.shape
    nt_index = {name: i for i, name in enumerate(grammar.nonterminals)}
    pushes = [
        [] if r == grammar.pad_index else [nt_index[s.symbol()] for s in reversed(p.rhs()) if isinstance(s, Nonterminal)]
        for r, p in enumerate(grammar.productions)
    ]
    ids = torch.full((B, L), grammar.pad_index, dtype=torch.long)
    finished = torch.zeros(B, dtype=torch.bool)
    for b in range(B):
        stack = [nt_index[grammar.start]]
        for t in range(L):
            row = logits[b, t].masked_fill(~grammar.masks[stack.pop()], float("-inf"))
            r = int(row.argmax())
            ids[b, t] = r
            stack.extend(pushes[r])
            if not stack:
                finished[b] = True
                break
            if len(stack) > L - t - 1:
                break
    return ids, finished


def constrained_benchmark(args: argparse.Namespace) -> dict:
    """Batched constrained decoding vs the per-sample reference on the same logits (greedy)."""
    from discrete_rae.grammar.chem import chem_tables
    from discrete_rae.grammar.chem_reference import ReferenceDecoder
    from discrete_rae.codecs import GrammarCodec

    g = Grammar.builtin(args.grammar if args.grammar != "smiles" else "smiles_compact")
    L = args.length or 90
    codec = GrammarCodec(g, max_length=L)
    codec.aromatic = False
    logits = torch.randn(args.n, L, g.n_rules, generator=torch.Generator().manual_seed(args.seed))
    # 1,000 rows by default: a 100-row sample was faster per row than average (0.96 vs 1.4 ms)
    ref_n = min(args.ref_n or 1000, args.n)
    chem = chem_tables(g, aromatic=False)
    times, ref_times, cpu, ref_cpu = [], [], [], []
    for _ in range(max(1, args.repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            ids, done = codec.decode_logits(logits)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        ref_rows, ref_done = [], []
        rows = logits[:ref_n].numpy()
        for b in range(ref_n):
            dec = ReferenceDecoder(g, codec._ring_tables, chem, L)
            for t in range(L):
                if not dec.stack and (dec.done or dec.cut):
                    break
                r = int(np.where(dec.allowed(), rows[b, t], -np.inf).argmax())
                dec.push(r)
            ref_rows.append(dec.ids + [g.pad_index] * (L - len(dec.ids)))
            ref_done.append(dec.done)
        ref_times.append(time.perf_counter() - t0)
        ref_cpu.append(time.process_time() - c0)
    batched_s, ref_s = min(times), min(ref_times)
    identical = bool(np.array_equal(ids[:ref_n].numpy(), np.asarray(ref_rows))
                     and done[:ref_n].tolist() == ref_done)
    return {"benchmark": "decode_speed_constrained", "grammar": g.name, "n": args.n, "steps": L,
            "batched_s": round(batched_s, 3), "batched_samples_per_s": round(args.n / batched_s, 1),
            "reference_n": ref_n, "reference_s": round(ref_s, 3),
            "reference_samples_per_s": round(ref_n / ref_s, 1),
            "ratio": round((args.n / batched_s) / (ref_n / ref_s), 1),
            "batched_cpu_s": round(min(cpu), 3), "reference_cpu_s": round(min(ref_cpu), 3),
            "ratio_cpu_time": round((min(ref_cpu) / ref_n) / (min(cpu) / args.n), 1), "identical": identical,
            "finished_fraction": round(float(done.float().mean()), 4),
            "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="batch size")
    ap.add_argument("--grammar", default="smiles")
    ap.add_argument("--length", type=int, default=None, help="decode steps (default: grammar max_length)")
    ap.add_argument("--ref-n", type=int, default=None, help="samples decoded by the reference (default: all; --constrained: 1,000)")
    ap.add_argument("--torch-ref-n", type=int, default=300, help="samples for the torch per-sample loop (0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each decoder; the best time is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--constrained", action="store_true",
                    help="length + ring + chemistry masks, reference = discrete_rae.grammar.chem_reference")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.constrained:
        print(json.dumps(constrained_benchmark(args)))
        return

    g = Grammar.builtin(args.grammar)
    L = args.length or g.max_length
    gen = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(args.n, L, g.n_rules, generator=gen)

    # alternate the two decoders so that a changing machine load hits both alike;
    # the best time of each is reported
    ref_n = min(args.ref_n or args.n, args.n)
    ref_logits = logits[:ref_n].numpy()
    # wall and CPU time (this process; both decoders run on one thread) are recorded:
    # CPU time is less disturbed when other processes compete for the cores
    times, ref_times, cpu, ref_cpu = [], [], [], []
    for _ in range(max(1, args.repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = g.decode_logits(logits, greedy=True)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        ref_ids, ref_fin = reference_decode(g, ref_logits)
        ref_times.append(time.perf_counter() - t0)
        ref_cpu.append(time.process_time() - c0)
    batched_s, ref_s = min(times), min(ref_times)
    batched_cpu_s, ref_cpu_s = min(cpu), min(ref_cpu)

    torch_ref = {}
    if args.torch_ref_n:
        k = min(args.torch_ref_n, args.n)
        with torch.no_grad():
            t0, c0 = time.perf_counter(), time.process_time()
            t_ids, t_fin = reference_decode_torch(g, logits[:k])
            tw, tc = time.perf_counter() - t0, time.process_time() - c0
        torch_ref = {
            "torch_reference_n": k,
            "torch_reference_samples_per_s": round(k / tw, 1),
            "ratio_vs_torch_reference": round((args.n / batched_s) / (k / tw), 1),
            "ratio_cpu_time_vs_torch_reference": round((tc / k) / (batched_cpu_s / args.n), 1),
            "torch_reference_identical": bool(torch.equal(t_ids, res.ids[:k]) and torch.equal(t_fin, res.finished[:k])),
        }

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
        "batched_cpu_s": round(batched_cpu_s, 4),
        "reference_cpu_s": round(ref_cpu_s, 4),
        "ratio_cpu_time": round((ref_cpu_s / ref_n) / (batched_cpu_s / args.n), 2),
        "identical": identical,
        "finished_fraction": round(float(res.finished.float().mean()), 4),
        "mean_length": round(float(res.lengths.float().mean()), 2),
    }
    out.update(torch_ref)
    # timings depend on what else runs on the machine: record its load
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
