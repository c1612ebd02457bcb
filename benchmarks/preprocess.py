"""Benchmark: MOSES train set -> canonical SMILES -> grammar rule sequences -> compact arrays.

Measures, for the full MOSES training set (1,584,663 SMILES) or a random subset of
``--n``: the load (read + RDKit canonicalisation, optional), the parse with the
SMILES grammar into compact padded arrays, and the reload from the encoding cache;
the bytes held by the resulting arrays and the peak resident memory of this process
and of its worker processes (``resource.getrusage``). Targets: under 10 minutes on
2 cores, under 500 MB of resident preprocessed data.

    python benchmarks/preprocess.py                    # full set, canonicalised, 2 workers
    python benchmarks/preprocess.py --no-canonicalize  # MOSES strings as shipped
    python benchmarks/preprocess.py --n 100000

Prints the figures, then ONE JSON line with all of them (last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discrete_rae.data.cache import encode_cached  # noqa: E402
from discrete_rae.data.molecules import load_molecules  # noqa: E402
from discrete_rae.grammar import Grammar  # noqa: E402


def _rss_mb(who: int) -> float:
    """Peak resident set size in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1 << 20) if platform.system() == "Darwin" else peak / 1024


def _cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and its reaped workers."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="random subset size (default: the whole train set)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--canonicalize", dest="canonicalize", action="store_true", default=True,
                    help="canonicalise with RDKit (default)")
    ap.add_argument("--no-canonicalize", dest="canonicalize", action="store_false",
                    help="use the MOSES strings as shipped (already canonical for an older RDKit)")
    ap.add_argument("--width", choices=("data", "grammar"), default="data",
                    help="pad ids to the longest sequence (data) or to the grammar's max_length")
    ap.add_argument("--cache-dir", type=Path, default=None, help="encoding cache (default: a temporary folder)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    tmp = None
    cache_dir = args.cache_dir
    if cache_dir is None:
        tmp = tempfile.mkdtemp(prefix="drae-bench-")
        cache_dir = Path(tmp)
    grammar = Grammar.builtin("smiles")
    try:
        c0, t0 = _cpu_s(), time.perf_counter()
        data = load_molecules("moses", n=args.n, seed=args.seed, workers=args.workers,
                              canonicalize=args.canonicalize, progress=args.progress, cache=False)
        t_load, cpu_load = time.perf_counter() - t0, _cpu_s() - c0
        rep = data.report
        print(f"load:   {t_load:8.1f} s  ({cpu_load:.1f} CPU s)  {rep.counts_line()}  (canonicalize={args.canonicalize})")

        changed = rep.changed if args.canonicalize else None
        if changed is not None:
            print(f"        {changed:,} of {len(data.smiles):,} canonical SMILES differ from the shipped strings")

        width = "longest" if args.width == "data" else None
        c0, t0 = _cpu_s(), time.perf_counter()
        enc = encode_cached(grammar, data.smiles, cache_dir, workers=args.workers, progress=args.progress,
                            width=width)
        t_parse, cpu_parse = time.perf_counter() - t0, _cpu_s() - c0
        longest = int(enc.lengths.max())
        print(f"parse:  {t_parse:8.1f} s  ({cpu_parse:.1f} CPU s)  {len(enc):,} parsed, {len(enc.failures):,} failed, "
              f"mean length {float(enc.lengths.mean()):.1f}, longest {longest}")
        if enc.failures:
            print(f"        e.g. {enc.failures[0][2][:150]}")

        n_ok = len(enc)
        arrays_mb = enc.nbytes / 1e6
        full_width_mb = (n_ok * grammar.max_length * enc.ids.itemsize + enc.lengths.nbytes + enc.ok_index.nbytes) / 1e6
        total = t_load + t_parse
        cpu_total = cpu_load + cpu_parse
        # peak memory of the preprocessing itself (before the cache reload below)
        rss_self, rss_children = _rss_mb(resource.RUSAGE_SELF), _rss_mb(resource.RUSAGE_CHILDREN)
        ids_shape, ids_dtype = list(enc.ids.shape), str(enc.ids.dtype)
        mean_rules = float(enc.lengths.mean())
        n_failed = len(enc.failures)
        del enc

        t0 = time.perf_counter()
        again = encode_cached(grammar, data.smiles, cache_dir, workers=args.workers, progress=False, width=width)
        t_cached = time.perf_counter() - t0
        assert again.from_cache and list(again.ids.shape) == ids_shape
        del again
        rss_after_reload = _rss_mb(resource.RUSAGE_SELF)
        print(f"cache:  {t_cached:8.1f} s  reload of the encoded arrays (peak RSS afterwards {rss_after_reload:.0f} MB)")
        print(f"arrays: {arrays_mb:8.1f} MB  ids {tuple(ids_shape)} {ids_dtype} + lengths + ok_index "
              f"({full_width_mb:.1f} MB if padded to max_length {grammar.max_length})")
        print(f"rss:    {rss_self:8.1f} MB peak (this process), {rss_children:.1f} MB peak (largest worker)")
        print(f"total:  {total:8.1f} s  ({cpu_total:.1f} CPU s) load + parse on {args.workers} worker(s); "
              f"targets: < 600 s {'OK' if total < 600 else 'MISSED'}, "
              f"< 500 MB arrays {'OK' if arrays_mb < 500 else 'MISSED'}")
        result = {
            "benchmark": "preprocess_moses",
            "n_records": rep.records,
            "n_examined": rep.examined,
            "n_molecules": len(data.smiles),
            "rejected": dict(rep.rejected),
            "duplicates": rep.duplicates,
            "canonicalize": args.canonicalize,
            "canonical_changed": changed,
            "n_parsed": n_ok,
            "n_parse_failed": n_failed,
            "mean_rules": round(mean_rules, 2),
            "max_rules": longest,
            "workers": args.workers,
            "load_s": round(t_load, 1),
            "load_cpu_s": round(cpu_load, 1),
            "parse_cpu_s": round(cpu_parse, 1),
            "parse_s": round(t_parse, 1),
            "cache_load_s": round(t_cached, 2),
            "total_s": round(total, 1),
            "total_cpu_s": round(cpu_total, 1),
            "ids_shape": ids_shape,
            "ids_dtype": ids_dtype,
            "arrays_mb": round(arrays_mb, 1),
            "arrays_mb_full_width": round(full_width_mb, 1),
            "peak_rss_mb": round(rss_self, 1),
            "peak_rss_worker_mb": round(rss_children, 1),
            "peak_rss_after_reload_mb": round(rss_after_reload, 1),
            "cpu_count": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }
        print(json.dumps(result))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
