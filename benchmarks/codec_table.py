"""Collect finished molecule runs into one markdown table (README, "Side by side").

Reads each run directory's ``metrics.json`` (sampler, steps, stop reason, sample and
reconstruction figures, training seconds) and the last validation record of ``metrics.jsonl``
(reconstruction NLL and the latent term, nats per molecule). A run that is missing or unfinished
gets one row saying so instead of figures.

Usage:
    python benchmarks/codec_table.py RUNS_DIR grammar_rae grammar_vae selfies_rae ...

Prints the markdown table, then one JSON line (the figures per run, as read).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HEADER = ("| model | sampler | steps (epochs) | val rec NLL | val latent term | valid | unique | novel "
          "| greedy recon | beam-5 recon | training min |")


def last_val(run: Path) -> dict[str, float]:
    """The ``val`` entry of the last record in ``metrics.jsonl`` that has one ({} if none)."""
    path = run / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    vals = [r["val"] for r in records if isinstance(r.get("val"), dict)]
    return vals[-1] if vals else {}


def fmt(value: object, spec: str) -> str:
    """``value`` formatted with ``spec``, or an em dash when it was not reported."""
    return "—" if value is None else format(value, spec)


def read_run(run: Path) -> dict | None:
    """``metrics.json`` of ``run`` with ``val`` (last validation record) added; None if missing."""
    metrics_path = run / "metrics.json"
    if not metrics_path.exists():
        return None
    return {**json.loads(metrics_path.read_text()), "val": last_val(run)}


def row(name: str, m: dict | None) -> str:
    """One markdown row for the run ``name`` with figures ``m`` (see :func:`read_run`)."""
    if m is None:
        return f"| {name} | no metrics.json (run failed or unfinished) |" + " |" * 9
    val = m["val"]
    steps = f"{m['steps']:,} ({m['epochs']})"
    if not str(m.get("stopped", "")).startswith("max steps"):
        steps += f" stopped: {m.get('stopped')}"
    minutes = m.get("train_seconds")
    return " | ".join([
        f"| {name}", str(m.get("sampler")), steps, fmt(val.get("rec"), ".2f"), fmt(val.get("latent"), ".2f"),
        fmt(m.get("valid"), ".3f"), fmt(m.get("unique"), ".3f"), fmt(m.get("novel"), ".3f"),
        fmt(m.get("recon_accuracy"), ".3f"), fmt(m.get("recon_accuracy_beam"), ".3f"),
        fmt(None if minutes is None else minutes / 60, ".1f"),
    ]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("runs", nargs="+", help="run directory names under runs_dir")
    args = parser.parse_args()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    figures = {name: read_run(args.runs_dir / name) for name in args.runs}
    for name, m in figures.items():
        print(row(name, m))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
