"""``interpolate``: decode a line / great circle between two strings, or a neighbourhood of one
(see :mod:`discrete_rae.interpolate`)."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import UsageError
from ..interpolate import (PATHS, PathPoint, decode_path, encode_texts, interpolate_codes, load_sequence_run,
                           neighbourhood, render_points, training_codes, validity)
from ..io import write_json
from ..runtime import choose_device, set_threads
from .common import add_common

if TYPE_CHECKING:
    from ..domains.base import TextDomain

NAME = "interpolate"
HELP = "decode a line / great circle between two strings, or a neighbourhood of one"

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory (e.g. runs/grammar_rae-molecules)")
    p.add_argument("--from", dest="start", default=None, help="first string of the path")
    p.add_argument("--to", dest="end", default=None, help="last string of the path")
    p.add_argument("--steps", type=int, default=10, help="points on the path, endpoints included (default 10)")
    p.add_argument("--path", choices=PATHS, default="line", help="line (default) | slerp (great circle)")
    p.add_argument("--around", default=None, help="decode a neighbourhood of this string instead of a path")
    p.add_argument("--n", type=int, default=25, help="--around: number of perturbed codes (default 25)")
    p.add_argument("--radius", type=float, default=0.5,
                   help="--around: perturbation std in units of the training codes' per-dimension std (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="--around: seed of the perturbations (default 0)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/interpolate-PATH-HASH or "
                                               "RUN/interpolate-around-HASH)")
    add_common(p)


def _check_args(args: argparse.Namespace) -> str:
    """The mode (``path`` or ``around``) after checking that the flags fit together."""
    if args.around is not None:
        if args.start is not None or args.end is not None:
            raise UsageError("--around cannot be combined with --from/--to")
        if args.n <= 0 or args.radius <= 0:
            raise UsageError("--n and --radius must be positive")
        return "around"
    if args.start is None or args.end is None:
        raise UsageError("give --from STRING --to STRING (a path) or --around STRING (a neighbourhood)")
    if args.steps < 2:
        raise UsageError("--steps must be at least 2")
    return "path"


def _out_dir(args: argparse.Namespace, loaded: Any, mode: str) -> Path:
    if args.out:
        return Path(args.out)
    key = (f"{args.around}|{args.n}|{args.radius}|{args.seed}" if mode == "around"
           else f"{args.start}|{args.end}|{args.steps}")
    tag = "around" if mode == "around" else args.path
    return loaded.run_dir / f"interpolate-{tag}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def run(args: argparse.Namespace) -> int:
    """``interpolate``: decode a path or a neighbourhood, print the table, write JSON + PNG."""
    mode = _check_args(args)
    set_threads(args.threads)
    device = choose_device(args.device)
    loaded, domain = load_sequence_run(Path(args.run), device)
    if mode == "around":
        result, points = _around(args, loaded, domain, device)
        labels = ["centre"] + [f"d={p.t:.2f}" for p in points[1:]]
    else:
        result, points = _path(args, loaded, domain, device)
        labels = [f"t={p.t:.2f}" for p in points]
    out = _out_dir(args, loaded, mode)
    out.mkdir(parents=True, exist_ok=True)
    judged = points[1:] if mode == "around" else points  # the centre is not part of its neighbourhood
    result = {"run": str(loaded.run_dir), "domain": loaded.run.domain, "mode": mode, **result,
              "validity": validity(judged), "points": [asdict(p) for p in points]}
    write_json(out / "interpolation.json", result)
    render_points(loaded.run.domain, [p.text for p in points], labels, out / "interpolation.png",
                  f"{mode} in the latent space of {loaded.run_dir.name}")
    print(format_points(points, "distance" if mode == "around" else "t"))
    print(f"validity along the {'neighbourhood' if mode == 'around' else 'path'}: {result['validity']:.2f}")
    print(f"written to {out}  (interpolation.json, interpolation.png)")
    return 0


def _path(args: argparse.Namespace, loaded: Any, domain: TextDomain, device: torch.device) -> tuple[dict, list[PathPoint]]:
    z = encode_texts(loaded, domain, [args.start, args.end], device)
    t, codes = interpolate_codes(z[0], z[1], args.steps, args.path)
    points = decode_path(domain, loaded.model, codes, device, t)
    ends = [domain.canonical(args.start), domain.canonical(args.end)]
    return {"from": args.start, "to": args.end, "path": args.path, "steps": args.steps,
            "from_reconstructed": points[0].valid and domain.canonical(points[0].text) == ends[0],
            "to_reconstructed": points[-1].valid and domain.canonical(points[-1].text) == ends[1]}, points


def _around(args: argparse.Namespace, loaded: Any, domain: TextDomain, device: torch.device) -> tuple[dict, list[PathPoint]]:
    z = encode_texts(loaded, domain, [args.around], device)[0]
    scale = training_codes(loaded, domain, device, seed=args.seed, progress=not args.quiet).std(0)
    gen = torch.Generator().manual_seed(args.seed)
    dist, codes = neighbourhood(z, args.n, args.radius, scale, gen)
    points = decode_path(domain, loaded.model, torch.cat([z[None], codes]), device,
                         torch.cat([dist.new_zeros(1), dist]))  # the centre first, at distance 0
    centre = domain.canonical(args.around)
    same = sum(p.valid and domain.canonical(p.text) == centre for p in points[1:])
    distinct = len({domain.canonical(p.text) for p in points[1:] if p.valid})
    return {"around": args.around, "n": args.n, "radius": args.radius, "seed": args.seed,
            "centre_reconstructed": points[0].valid and domain.canonical(points[0].text) == centre,
            "same_as_centre": same / args.n, "distinct_valid": distinct}, points


def format_points(points: Sequence[PathPoint], key: str) -> str:
    """A table: position, valid, decoded string."""
    rows = [f"{key:>8}  valid  decoded"]
    rows += [f"{p.t:8.3f}  {'yes' if p.valid else 'no ':<5}  {p.text if p.text is not None else '<unfinished>'}"
             for p in points]
    return "\n".join(rows)
