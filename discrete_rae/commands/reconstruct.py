"""``reconstruct``: a file of strings in, their greedy reconstructions out, plus the exact-match rate.

Output: one line per input line: the reconstruction, ``<unfinished>`` (the decoder did not
finish) or ``<not encoded>`` (a bad input line: counted and reported, not fatal). Exact match
means the same canonical string (RDKit canonical SMILES / the grammar's spelling of an
expression); the rate is over the encodable lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import write_json, write_text
from .common import add_run_arg
from .encode import load_and_encode, report_failures

NAME = "reconstruct"
HELP = "reconstruct a file of strings (one a line) through the run's code; prints the exact-match rate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arg(p, sampler=False)
    p.add_argument("--input", required=True, help="text file: one SMILES string / expression per line")
    p.add_argument("--out", default=None, help="output text file (default: RUN/reconstruct-INPUTNAME.txt); "
                                               "a .json summary is written beside it")


def run(args: argparse.Namespace) -> int:
    lines, model, codes, ok, failures = load_and_encode(args)
    decoded = model.decode(codes)
    canonical = model.domain.canonical
    out_lines = ["<not encoded>"] * len(lines)
    matches = 0
    for i, text in zip(ok, decoded):
        out_lines[i] = "<unfinished>" if text is None else text
        matches += text is not None and canonical(text) == canonical(lines[i])
    rate = matches / len(ok)
    out = Path(args.out) if args.out else model.run_dir / f"reconstruct-{Path(args.input).stem}.txt"
    write_text(out, "\n".join(out_lines) + "\n")
    write_json(out.with_suffix(".json"), {"run": str(model.run_dir), "input": str(args.input), "lines": len(lines),
                                          "encoded": len(ok), "bad_lines": len(failures), "exact_match": matches,
                                          "exact_match_rate": rate})
    report_failures(failures, len(lines), "encoded")
    print(f"exact reconstruction: {rate:.3f} ({matches} of {len(ok)} encodable lines)")
    print(f"reconstructions written to {out}")
    return 0
