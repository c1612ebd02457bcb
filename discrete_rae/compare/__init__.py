"""The comparison of two models (or two finished runs) behind ``python -m discrete_rae compare``.

    python -m discrete_rae compare --domain digits --models gumbel_vae,discrete_rae --preset quick
    python -m discrete_rae compare --runs runs/grammar_vae-molecules,runs/grammar_rae-molecules

The command (:mod:`discrete_rae.commands.compare`) trains both models with the same preset,
overrides and seed (or loads finished runs with :func:`pipeline.load_run`), then writes
``RUNS_DIR/compare-NAME/report.md``, ``comparison.json`` and PNGs. Continuous codes get the
metrics that apply to them.

Modules: :mod:`.stats` (pure statistics), :mod:`.side` (one compared run and the estimators
that need it), :mod:`.views` (per-domain decoding, quality and pictures), :mod:`.evaluate`
(every figure for one side), :mod:`.report` (report.md, comparison.json).

What is measured (all on the test split, or its first ``n_eval`` examples):

- reconstruction: -log p(x | code) in nats (and bits) per example with the deterministic code
  (posterior mean / argmax one-hot); pixels: mean squared error; sequences: token accuracy and
  the share of exactly reconstructed strings (greedy decoding).
- stochastic latents (VAEs): the negative ELBO and the importance-weighted bound
  -log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x), z_i ~ q(z | x), from the same k draws
  (Burda et al. 2016). Categorical draws are exact one-hot samples (Jang et al.'s evaluation).
- sample quality of every fitted ex-post sampler, by the domain's metric (images: Fréchet
  distance in the feature space of the data set's classifier, precision/recall; sequences:
  validity, uniqueness, novelty); for discrete codes also the share of sampled codes that are
  copies of a training code.
- codes (discrete): per-variable entropy H_n of the class used over the training codes (nats)
  and perplexity exp(H_n); the share of (variable, class) slots never used; active variables =
  those whose most frequent class covers less than 99% of the training codes; distinct codes.
  Continuous: active units (Var_x E[z_d | x] > 0.01, Burda et al.).
- mutual information I(X; C) between the data and the code under the empirical distribution of
  the M evaluation examples and the encoder q(c | x):
  I = 1/M sum_i E_{c ~ q(.|x_i)} [log q(c | x_i) - log (1/M sum_j q(c | x_j))], estimated with S
  draws per example. For a deterministic code q is a point mass and I = H(C), the plug-in entropy
  of the codes. Either way I <= log M (reported). Also sum_n I(X; C_n) (per variable, exact),
  an upper bound of I(X; C) when the variables are conditionally independent given x.
- linear probe: logistic regression (classes; accuracy) or ridge regression (a molecular
  property, Crippen logP; r^2) from the codes of the training split to the test split.
- decoder smoothness (discrete codes): the quality of decoded test codes after resampling r
  variables uniformly (r = 0, 1, 3, 10).
- a 2-D PCA embedding of the test codes coloured by label; decodes along Hamming paths between
  pairs of test codes (one variable switched per step, in random order; for continuous codes a
  linear interpolation); for sequences the validity along the path.
"""

from __future__ import annotations

from .evaluate import evaluate_side, perturbation_quality, sample_quality
from .report import verdict, write_report
from .side import PRESET_EVAL, EvalSettings, Side, bounds, hamming_paths, load_side, mutual_information, train_or_reuse
from .stats import (best_sampler, code_indices, continuous_code_stats, discrete_code_stats, entropy_nats,
                    linear_probe, log_weights, reconstruction_nll)
from .views import VIEWS, ImageView, SequenceView, draw_pictures

__all__ = ["PRESET_EVAL", "VIEWS", "EvalSettings", "ImageView", "SequenceView", "Side", "best_sampler", "bounds",
           "code_indices", "continuous_code_stats", "discrete_code_stats", "draw_pictures", "entropy_nats",
           "evaluate_side", "hamming_paths", "linear_probe", "load_side", "log_weights", "mutual_information",
           "perturbation_quality", "reconstruction_nll", "sample_quality", "train_or_reuse", "verdict",
           "write_report"]
