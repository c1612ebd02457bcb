"""Validation NLL of finished sequence runs under both training masks (``train_mask``).

A run trained with ``--train-mask constraints`` reports its validation loss under the constraint
mask, which is lower than the grammar-mask loss for the same logits by construction. This script
scores each run's validation split (the same split ``train.py`` used) under both masks, so runs
trained with either option can be compared on one footing, and times the constraint-mask replay.

    python benchmarks/train_mask_nll.py --runs RUN_DIR [RUN_DIR ...] --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from discrete_rae.catalog import load_all  # noqa: E402
from discrete_rae.grammar.teacher_mask import constraint_masks  # noqa: E402
from discrete_rae.model import SequenceLikelihood  # noqa: E402
from discrete_rae.pipeline import load_run  # noqa: E402
from discrete_rae.registry import DOMAINS  # noqa: E402


@torch.no_grad()
def score(run_dir: Path, batch: int) -> dict[str, float]:
    """Mean reconstruction NLL per example of the run's validation split under each mask."""
    loaded = load_run(run_dir, torch.device("cpu"))
    run, model = loaded.run, loaded.model
    prepared = DOMAINS.get(run.domain).prepare(run, codec_state=loaded.checkpoint["codec"], progress=False)
    codec = model.codec
    codec.aromatic = prepared.codec.aromatic  # a loaded codec does not know its data's aromaticity
    val = prepared.val.long()
    sums = {"grammar": 0.0, "constraints": 0.0}
    replay = 0.0
    for start in range(0, len(val), batch):
        x = val[start:start + batch]
        logits = model.decoder(model.encode(x), x)
        sums["grammar"] += float(SequenceLikelihood(codec, "grammar").nll(logits, x).sum())
        t0 = time.perf_counter()
        mask = constraint_masks(codec, x)
        replay += time.perf_counter() - t0
        logp = torch.log_softmax(logits.float().masked_fill(~mask, float("-inf")), -1)
        sums["constraints"] -= float(logp.gather(-1, x.unsqueeze(-1)).sum())
    return {"run": str(run_dir), "train_mask": getattr(run.model, "train_mask", "grammar"), "n_val": len(val),
            "val_nll_grammar_mask": sums["grammar"] / len(val),
            "val_nll_constraint_mask": sums["constraints"] / len(val),
            f"replay_seconds_per_{batch}": replay / max(1, -(-len(val) // batch))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_all()
    rows = [score(r, args.batch) for r in args.runs]
    for row in rows:
        print(f"{row['run']}: trained with {row['train_mask']}; val NLL per example (n={row['n_val']}): "
              f"grammar mask {row['val_nll_grammar_mask']:.3f}, constraint mask {row['val_nll_constraint_mask']:.3f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
