"""Presets: named override sets per domain (model / train / data / eval sections).

- ``smoke``: seconds; used by the tests.
- ``quick``: the default; <= 10 minutes on a 2-core CPU including data preparation. Its
  budgets are fixed numbers of optimiser steps, so the same seed gives the same model on any
  machine (up to floating-point differences between CPUs); the wall-clock limit is only a safety cap (a run it stops records "time cap").
- ``paper``: the paper's sizes (Kusner et al. 2017, Ghosh et al. 2020); meant for a GPU.
- ``gpu`` (molecules): this project's quick recipe scaled up for one GPU (measured on an H200,
  scripts/gpu_recipe.sh: 17.3 steps/s in bf16; 3,108 steps on 94k molecules reconstruct 0.915).
"""

from __future__ import annotations

from typing import Any

# Steps of the quick presets, calibrated to about 8 minutes of training on this project's idle
# 2-core CPU: benchmarks/train_speed.py measured 4.7 steps/s at batch 64 for molecules on
# 2026-12-03 (the same figure for the code before the step budget, so 3,500 steps would take
# 12 minutes there). On 2026-12-04 another machine of the same kind trained the 2,000 steps in
# 303 s (6.6 steps/s, fresh-clone main job 6 min 57 s). The wider conv encoder (64 channels,
# kernels 5; 2026-12-04, README "Encoder capacity") costs 1 / 0.75 of the old step time with 2
# threads (1 / 0.84 with one), so it gets 1,680 steps: equal time with one thread, 12% more than
# the old 2,000 with two; about 8 minutes of training on the slower machine. Expressions: 8.7
# steps/s (batch 256, with validation) on 2026-12-03, 14.4 on 2026-12-04's machine; 4,400 steps hit the
# 8-minute cap at step 4,193 on the slower one. 2,000 steps reconstructed 0.994 there but 0.987 here
# (below the 0.99 target: the model is still improving fast at step 2,000, so floating-point
# differences between CPUs move it); 3,000 and 4,000 steps both give 0.992 here, so 3,000 (about
# 3.4 minutes of training here, 5.7 on the slower machine).
QUICK_MOLECULE_STEPS = 1_680
QUICK_EXPRESSION_STEPS = 3_000
# Safety caps: a much slower machine stops here instead of running on (recorded as "time cap").
QUICK_MOLECULE_CAP_MINUTES = 15.0
QUICK_EXPRESSION_CAP_MINUTES = 8.0

PRESETS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "molecules": {
        "smoke": {
            "model": {"enc_hidden": 64, "latent_dim": 8, "dec_hidden": 64, "embed_dim": 16,
                      "conv_channels": (4, 4), "conv_kernels": (5, 5), "kl_anneal_steps": 10},
            "train": {"epochs": 1, "batch_size": 64},
            "data": {"dataset": "nci5k", "n_train": 300, "n_test": 20},
            "eval": {"n_samples": 30, "gmm_k": 2},
        },
        "quick": {
            # smiles_compact: half the decoder steps and right-recursive chains (grammars/README.md).
            # Kept at equal steps (400-step ablation): the constant rate of ReduceLROnPlateau gave a
            # lower validation NLL than the linear schedule (23.0 vs 29.1; 25.9 with a 4e-3 peak),
            # length buckets (33.4 vs 29.1) or the LSTM cell (36.3 vs 33.4); the last two are
            # 1.3x and 1.7x the molecules/s; the reversed bi-GRU encoder was slightly better per step
            # (22.2 vs 23.0) but slower per step. Options: --lr-schedule, --bucket-batches,
            # --decoder-cell, --encoder gru --enc-reverse true.
            # Data limits reconstruction past ~4 epochs, not before: with the LSTM cell, buckets and
            # the linear schedule, 4,400 steps on 37k molecules overfit (validation NLL 10.3, held-out
            # reconstruction 0.085) and on 189k reach validation NLL 6.7 and reconstruction 0.189; the
            # same recipe on 113k molecules for 2,400 steps (the 8-minute budget) never learned to
            # use its code (validation NLL 19.0, reconstruction 0.005), hence the GRU recipe here
            # (README, "Main job").
            # Encoders at this budget (README, "Encoder capacity", 2026-12-04): the reversed bi-GRU
            # of 256 reconstructs 3x better at the same 2,000 steps (0.131 vs 0.041) but costs 3.1x
            # the step time; at equal time the conv encoder beats the 128-wide bi-GRU and bi-LSTM.
            # The Grammar VAE's conv stack (channels 9, 9, 10, kernels 9, 9, 11) is narrow: 64
            # channels with kernels 5 at 1,680 steps (equal one-thread time) reconstruct 0.058 and
            # 0.071 greedy (seeds 0, 1) against 0.040 and 0.022 for the narrow stack at 2,000, with
            # validation NLL 8.9 / 9.0 against 10.2 / 11.8; 128 channels cost too much per step.
            # max_length 100 (the kekulised data's longest derivation is 87): decoding room, so that
            # the length mask rarely forces a row past the chemistry mask; training runs each batch
            # only to its longest sequence, so the room costs nothing there.
            "model": {"grammar": "smiles_compact", "conv_channels": (64, 64, 64), "conv_kernels": (5, 5, 5),
                      "enc_hidden": 256, "latent_dim": 56, "dec_hidden": 256,
                      "dec_layers": 1, "embed_dim": 32, "max_length": 100},
            "train": {"epochs": 1000, "batch_size": 64, "lr": 2e-3, "max_steps": QUICK_MOLECULE_STEPS,
                      "max_minutes": QUICK_MOLECULE_CAP_MINUTES},
            "data": {"dataset": "moses", "n_train": 40000, "n_test": 1000},
            # beam search K=5 beside greedy reconstruction: ~20 s CPU on the 1,000 test codes
            "eval": {"n_samples": 1000, "beam_width": 5},
        },
        # The quick recipe scaled up for one GPU (issue #12 item 9). Sizes follow MHG-VAE (bi-GRU
        # over the reversed rule sequence, 3-layer decoder, latent 72), which reports 93%
        # reconstruction on ZINC-250k; the schedule is the budgeted one (linear decay to 0 at
        # max_steps). Cost: ~1,950 steps per epoch at batch 128 on ZINC-250k's ~250k molecules,
        # so 40 epochs = 78k steps. Measured 2026-12-04 on one H200 (scripts/gpu_recipe.sh, bf16):
        # 17.3 steps/s, a 250k-molecule epoch in ~113 s, so the 78k steps take ~75 minutes; cut to
        # 3,108 steps (150 s) on 94k MOSES molecules the same recipe already reconstructs 0.915
        # (greedy) / 0.935 (beam 5) of 1,000 held-out molecules at validation NLL 0.37. On this
        # project's 2-core CPU it would take days.
        "gpu": {
            "model": {"grammar": "smiles_compact", "encoder": "gru", "enc_reverse": True, "enc_layers": 2,
                      "enc_hidden": 512, "embed_dim": 64, "latent_dim": 72, "decoder": "gru", "decoder_cell": "gru",
                      "dec_hidden": 512, "dec_layers": 3, "max_length": 100},
            "train": {"epochs": 40, "batch_size": 128, "lr": 1e-3, "lr_schedule": "linear", "warmup_fraction": 0.02,
                      "max_steps": 78_000, "bucket_batches": 16, "early_stop": 0},
            "data": {"dataset": "zinc250k", "n_train": 0, "n_test": 5000},
            "eval": {"n_samples": 10000, "beam_width": 5},
        },
        "paper": {
            "model": {"encoder": "conv", "conv_channels": (9, 9, 10), "conv_kernels": (9, 9, 11),
                      "enc_hidden": 435, "latent_dim": 56, "decoder": "repeat", "dec_hidden": 501, "dec_layers": 3},
            "train": {"epochs": 100, "batch_size": 500, "lr": 1e-3, "lr_factor": 0.2, "early_stop": 10},
            "data": {"dataset": "zinc250k", "n_train": 0, "n_test": 5000},
            "eval": {"n_samples": 10000},
        },
    },
    "expressions": {
        "smoke": {
            "model": {"enc_hidden": 32, "latent_dim": 4, "dec_hidden": 32, "embed_dim": 8,
                      "conv_channels": (2, 3), "conv_kernels": (2, 3), "kl_anneal_steps": 10},
            "train": {"epochs": 1, "batch_size": 64},
            "data": {"dataset": "generated", "n_train": 400, "n_test": 20},
            "eval": {"n_samples": 30, "gmm_k": 2},
        },
        "quick": {
            # bidirectional GRU encoder: greedy reconstruction 0.96 vs 0.47 for the paper's conv
            # stack after 2 minutes each (README, expressions)
            "model": {"grammar": "expressions_compact", "encoder": "gru", "enc_hidden": 100, "latent_dim": 25,
                      "dec_hidden": 128, "dec_layers": 1, "embed_dim": 32},
            "train": {"epochs": 1000, "batch_size": 256, "lr": 2e-3, "max_steps": QUICK_EXPRESSION_STEPS,
                      "max_minutes": QUICK_EXPRESSION_CAP_MINUTES},
            "data": {"dataset": "generated", "n_train": 100000, "n_test": 1000},
            "eval": {"n_samples": 1000},
        },
        "paper": {
            "model": {"conv_channels": (2, 3, 4), "conv_kernels": (2, 3, 4), "enc_hidden": 100, "latent_dim": 25,
                      "decoder": "repeat", "dec_hidden": 100, "dec_layers": 3},
            "train": {"epochs": 50, "batch_size": 500, "lr": 1e-3, "lr_factor": 0.2, "early_stop": 10},
            "data": {"dataset": "generated", "n_train": 100000, "n_test": 5000},
            "eval": {"n_samples": 10000},
        },
    },
}


def get_preset(domain: str, name: str) -> dict[str, dict[str, Any]]:
    """The overrides of preset ``name`` for ``domain`` (empty sections where unset)."""
    domain_presets = PRESETS.get(domain, {})
    if name not in domain_presets:
        raise KeyError(f"unknown preset {name!r} for domain {domain!r}; choose one of: {', '.join(sorted(domain_presets))}")
    return domain_presets[name]
