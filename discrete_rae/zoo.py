"""The model zoo: every model is one row of one table.

A row names its parts; the network family of the domain (models/sequence.py for molecules and
expressions, models/images.py for images) supplies encoder, decoder and likelihood, and
:func:`discrete_rae.models.build.build_model` builds any row on any domain its families serve.

Columns (each a registered component with its parameters):

- ``latent``: latent type and the weight ``beta`` of its latent term (KL for stochastic
  posteriors, the prior's energy for deterministic codes; distributions.py) with its
  annealing; categorical shape and temperature for discrete latents;
- ``prior``: p(z) (``standard_normal``, ``uniform_categorical``, ...);
- ``objective``: how the loss is formed (``penalized``, ...; objectives.py) and its weights;
- ``regularizer``: decoder regulariser and its weight (``l2`` = decoder-only weight decay,
  ``gp`` gradient penalty, ``sn`` spectral norm, ``none``);
- ``sampler``: the default way to generate (``prior`` draws from p(z); ``gmm`` /
  ``cat_mixture`` fit an ex-post density to the training codes, for models without a prior
  that the codes follow).

A cell may hold :class:`Per` values where a default must differ between network families
(the scale of the summed likelihood differs, so do the weights).

**VAE vs RAE.** ``vae`` and ``rae_l2`` differ in the latent column (gaussian + KL weight 1 vs
deterministic + 1/2 ||z||^2 weight), the regulariser column (none vs L2), and in the sampler
an RAE needs because it has no prior its codes follow. Prior and objective are the same.

**Names.** Rows are named by the idea (``vae``, ``rae_l2``, ``gumbel_vae``, ``discrete_rae``);
:data:`ALIASES` keeps the codec-specific names of earlier versions (``grammar_rae`` = ``rae_l2``
with the grammar codec, ``char_vae`` = ``vae`` with characters, ...), so every documented
command still works.

**Measured defaults.**
- Image regulariser weights (summed-nll scale: L2 is an AdamW decay coefficient on the decoder's
  kernels, GP multiplies mean (d sum mu^2 / dz)^2, SN has no weight), picked from {1e-2, 1e-1, 1}
  (L2) and {1e-3, 1e-1, 1} (GP) by one seed of the digits quick preset (GMM Fréchet-features
  9.0 / 6.1 / 15.1 and 10.7 / 8.8 / 11.9): 1e-2 and 1e-3 left the training curves
  indistinguishable from the plain RAE; 1 cost reconstruction or time.
- Sequence VAEs anneal the KL over 2,000 steps: without it the posterior collapsed (the Gumbel
  VAE on expressions: I(X; C) = 0.006 nats, quick preset).
- Discrete RAE: L2 1e-2 with the code penalty beta 1e-3 (digits, quick image preset with
  channels (32, 64), 40 epochs, seed 0; Fréchet in the digits classifier's features of 1,000
  ``cat_mixture`` samples, mean of 3 sampling seeds; test -log p(x|code) in nats): L2 1e-2 +
  beta 1e-3: FID 9.9, rec 29.7; GP 1e-3: 13.0, 29.1; none + beta 0 (``discrete_ae``): 11.8,
  29.6; L2 1e-2 + beta 0: 11.7, 29.2; L2 1e-1: 14.1, 28.8; SN: 29.1, 29.8 (SN also blurs
  reconstructions). The gaps between L2, GP and no regulariser are within the spread of one
  training seed (a few FID points); SN is clearly worse.

**Adding a model** is one :class:`Row` in :data:`ROWS` (and a test); a new prior, objective,
regulariser or sampler is one registered class, usable by any row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .models.build import build_model
from .registry import FAMILIES, ModelSpec, register_model


@dataclass(frozen=True)
class Per:
    """A default that differs per network family."""

    sequence: Any
    images: Any

    def on(self, family: str) -> Any:
        return getattr(self, family)


def _resolve(value: Any, family: str) -> Any:
    return value.on(family) if isinstance(value, Per) else value


@dataclass(frozen=True)
class Row:
    """One model: its parts (module docstring) and the network families it runs on."""

    name: str
    summary: str
    latent: tuple[str, dict[str, Any]]
    prior: str
    objective: tuple[str, dict[str, Any]]
    regularizer: tuple[str, Any]
    sampler: str
    families: tuple[str, ...] = ("sequence", "images")

    COLUMNS = ("latent", "prior", "objective", "regularizer", "sampler")

    def values(self, family: str) -> dict[str, Any]:
        """The model-config values this row sets on ``family``."""
        latent, latent_params = self.latent
        objective, objective_params = self.objective
        reg, weight = self.regularizer
        out = {"latent": latent, "prior": self.prior, "objective": objective, "decoder_reg": reg,
               "reg_weight": _resolve(weight, family), **latent_params, **objective_params}
        return {k: _resolve(v, family) for k, v in out.items()}


@dataclass(frozen=True)
class Alias:
    """An earlier name: ``row`` with fixed extra values (e.g. the codec) on some domains."""

    name: str
    row: str
    values: dict[str, Any] = field(default_factory=dict)
    domains: tuple[str, ...] = ("molecules", "expressions")


_ANNEAL = Per(sequence=2000, images=0)
_NORMAL, _UNIFORM = "standard_normal", "uniform_categorical"
_PENALIZED: tuple[str, dict[str, Any]] = ("penalized", {})
_CAT = dict(n_vars=30, n_classes=10, tau=1.0, tau_min=0.5, tau_rate=1e-4, tau_every=100)
_NONE = ("none", 0.0)


def _gaussian(beta: float) -> tuple[str, dict[str, Any]]:
    return ("gaussian", {"beta": beta, "kl_anneal_steps": _ANNEAL})


def _code(beta: Any) -> tuple[str, dict[str, Any]]:
    return ("deterministic", {"beta": beta})


_RAE_BETA = Per(sequence=1e-3, images=1e-2)

ROWS: tuple[Row, ...] = (
    Row("vae", "VAE: Gaussian posterior, KL to N(0, I), prior sampling (Kingma & Welling 2014)",
        _gaussian(1.0), _NORMAL, _PENALIZED, _NONE, "prior"),
    Row("beta_vae", "beta-VAE: the VAE with the KL weighted by beta = 4 (Higgins et al. 2017)",
        _gaussian(4.0), _NORMAL, _PENALIZED, _NONE, "prior"),
    Row("rae", "RAE: deterministic code + beta/2 ||z||^2, no decoder regulariser, GMM sampling (Ghosh et al. 2020)",
        _code(_RAE_BETA), _NORMAL, _PENALIZED, _NONE, "gmm"),
    Row("rae_l2", "RAE-L2: deterministic code, decoder weight decay, GMM sampling",
        _code(_RAE_BETA), _NORMAL, _PENALIZED, ("l2", Per(sequence=1e-4, images=1e-1)), "gmm"),
    Row("rae_gp", "RAE-GP: deterministic code, decoder gradient penalty, GMM sampling",
        _code(_RAE_BETA), _NORMAL, _PENALIZED, ("gp", Per(sequence=1e-2, images=1e-1)), "gmm"),
    Row("rae_sn", "RAE-SN: deterministic code, spectrally normalised decoder, GMM sampling",
        _code(_RAE_BETA), _NORMAL, _PENALIZED, ("sn", 0.0), "gmm"),
    Row("ae", "AE control: deterministic code, no latent term, no decoder regulariser, GMM sampling",
        _code(0.0), _NORMAL, _PENALIZED, _NONE, "gmm"),
    Row("gumbel_vae", "Gumbel-softmax VAE: 30x10 categorical latent, KL to uniform, uniform-prior sampling "
        "(Jang et al. 2017)", ("gumbel", {**_CAT, "beta": 1.0, "kl_anneal_steps": _ANNEAL, "straight_through": False}),
        _UNIFORM, _PENALIZED, _NONE, "uniform"),
    Row("discrete_rae", "discrete RAE: deterministic argmax code (straight-through), L2 decoder, ex-post mixture "
        "of categoricals", ("categorical", {**_CAT, "categorical_mode": "argmax", "beta": 1e-3}),
        _UNIFORM, _PENALIZED, ("l2", 1e-2), "cat_mixture"),
    Row("discrete_ae", "discrete AE control: deterministic argmax code, no regulariser, ex-post sampling",
        ("categorical", {**_CAT, "categorical_mode": "argmax", "beta": 0.0}), _UNIFORM, _PENALIZED, _NONE,
        "cat_mixture"),
    # --- part 2 of the family (adversarial)
    Row("aae", "AAE: deterministic code, a discriminator on codes vs N(0, I) draws, the encoder as its generator "
        "in its own phase, prior sampling (Makhzani et al. 2016)",
        _code(0.0), _NORMAL, ("aae", {"adv_weight": 1.0, "adv_lr_ratio": Per(sequence=0.5, images=0.2)}), _NONE,
        "prior"),
    Row("wae_gan", "WAE-GAN: deterministic code, lambda * GAN loss of the code in the main loss, log N(z; 0, I) "
        "added to the discriminator's logit, prior sampling (Tolstikhin et al. 2018)",
        _code(0.0), _NORMAL, ("wae_gan", {"adv_weight": Per(sequence=1.0, images=1000.0), "adv_sigma": 1.0}),
        _NONE, "prior"),
    Row("mask_aae", "MaskAAE: deterministic code times a learned mask alpha = 1 - exp(-a), WGAN-GP critic on "
        "masked codes vs masked N(0, I) draws, variance penalty on masked-off dimensions, masked-prior sampling "
        "(Mondal et al. 2020)", _code(0.0), _NORMAL,
        ("mask_aae", {"critic_steps": 5, "critic_gp": 10.0, "mask_var_weight": 100.0}), _NONE, "prior"),
    # --- the AAE's label variants (objectives_labels.py; images only: they read class labels)
    Row("aae_supervised", "supervised AAE: the one-hot label and a style code z enter the decoder, z matched to "
        "N(0, I) by a discriminator (Makhzani et al. 2016, sec. 5); images with class labels",
        ("style_label", {"beta": 0.0, "label_classes": 10}), "label_normal", ("aae_supervised", {"adv_weight": 1.0}),
        _NONE, "prior", families=("images",)),
    Row("aae_semi", "semi-supervised AAE: a categorical head y and a style z, discriminators y vs one-hot and z vs "
        "N(0, I), cross-entropy on 10 labels per class (Makhzani et al. 2016, sec. 6), plus 1000 x the batch mutual "
        "information I(x; y) (IMSAT) and 1000 x KL(y(x) || y(shifted noisy x)) (--cluster-mi-weight 0 "
        "--consistency-weight 0 is the paper's objective); images with class labels",
        ("style_category", {"beta": 0.0, "label_classes": 10}), "label_normal",
        ("aae_semi", {"adv_weight": 1.0, "labels_per_class": 10, "cluster_mi_weight": 1000.0,
                      "consistency_weight": 1000.0}), _NONE, "prior", families=("images",)),
    Row("aae_cluster", "clustering AAE: the semi-supervised AAE without labels, 16 clusters = argmax of the head "
        "(Makhzani et al. 2016, sec. 7), plus 1000 x the batch mutual information I(x; y) (IMSAT; "
        "--cluster-mi-weight 0 is the paper's objective); images", ("style_category", {"beta": 0.0, "label_classes": 16}),
        "label_normal", ("aae_cluster", {"adv_weight": 1.0, "cluster_mi_weight": 1000.0}), _NONE, "prior",
        families=("images",)),
    # --- part 1 of the family (objectives): objectives_mmd.py, objectives_iwae.py, objectives_mae.py
    # WAE-MMD: lambda on this toolkit's summed-nll scale. The paper's 10 multiplies a squared error
    # summed over pixels; our default pixel nll is that error / (2 sigma^2) with sigma = 0.1, i.e.
    # 50 x the paper's cost, so the paper's balance is lambda = 10 x 50 = 500 on images.
    # Sequences (summed categorical nats, no such scale): the paper's 10. Neither is tuned.
    Row("wae_mmd", "WAE-MMD: deterministic code, rec + lambda * MMD(codes, N(0, I) draws) with the inverse "
        "multiquadratic kernel, prior sampling (Tolstikhin et al. 2018)", _code(0.0), _NORMAL,
        ("wae_mmd", {"mmd_weight": Per(sequence=10.0, images=500.0)}), _NONE, "prior"),
    Row("info_vae", "InfoVAE: rec + (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z), p(z)), alpha 0, lambda 1000 "
        "(Zhao et al. 2019, MNIST)", _gaussian(1.0), _NORMAL,
        ("info_vae", {"info_alpha": 0.0, "info_lambda": 1000.0}), _NONE, "prior"),
    Row("iwae", "IWAE: Gaussian latent, the negative importance-weighted bound with k = 5 samples "
        "(Burda et al. 2016), DReG gradients (Tucker et al. 2019)", ("gaussian", {"beta": 1.0, "kl_anneal_steps": 0}),
        _NORMAL, ("iwae", {"iw_k": 5, "iw_estimator": "dreg"}), _NONE, "prior"),
    Row("mae", "MAE: -ELBO - eta mean_d log sigmoid(mean pairwise KL_d) + gamma mean_d std(pairwise KL_d), "
        "eta 50, gamma 0.1 (Ma et al. 2019)", _gaussian(1.0), _NORMAL,
        ("mae", {"mae_eta": 50.0, "mae_gamma": 0.1}), _NONE, "prior"),
    # --- part 1 of the family (priors)
    Row("vamp_vae", "VampPrior VAE: the VAE with p(z) = mean of q(z|u_k) over K learned pseudo-images, KL by "
        "sampling (Tomczak & Welling 2018); images only", _gaussian(1.0), "vamp", _PENALIZED, _NONE, "prior",
        families=("images",)),
)

ALIASES: tuple[Alias, ...] = (
    Alias("grammar_vae", "vae", {"codec": "grammar"}),
    Alias("grammar_rae", "rae_l2", {"codec": "grammar"}),
    Alias("grammar_rae_l2", "rae_l2", {"codec": "grammar"}),
    Alias("grammar_rae_gp", "rae_gp", {"codec": "grammar"}),
    Alias("grammar_rae_sn", "rae_sn", {"codec": "grammar"}),
    Alias("grammar_rae_none", "rae", {"codec": "grammar"}),
    Alias("grammar_ae", "ae", {"codec": "grammar"}),
    Alias("char_vae", "vae", {"codec": "char"}),
    Alias("char_rae", "rae_l2", {"codec": "char"}),
    Alias("selfies_vae", "vae", {"codec": "selfies"}, ("molecules",)),
    Alias("selfies_rae", "rae_l2", {"codec": "selfies"}, ("molecules",)),
)


def row(name: str) -> Row:
    """The row called ``name`` (aliases resolve to their row)."""
    for r in ROWS:
        if r.name == name:
            return r
    for a in ALIASES:
        if a.name == name:
            return row(a.row)
    raise KeyError(name)


def _cell(value: Any) -> str:
    if isinstance(value, Per):
        return f"{value.sequence:g} seq / {value.images:g} img" if isinstance(value.sequence, float) else \
            f"{value.sequence} seq / {value.images} img"
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown_table() -> str:
    """The zoo as a Markdown table (rows, their columns) followed by the aliases."""
    lines = ["| model | latent | prior | objective | regulariser | sampler | runs on |", "|---|---|---|---|---|---|---|"]
    for r in ROWS:
        latent = r.latent[0] + "".join(f", {k} {_cell(v)}" for k, v in r.latent[1].items()
                                       if k in ("beta", "kl_anneal_steps"))
        objective = r.objective[0] + "".join(f", {k} {_cell(v)}" for k, v in r.objective[1].items())
        reg = r.regularizer[0] + ("" if r.regularizer[0] in ("none", "sn") else f" {_cell(r.regularizer[1])}")
        lines.append(f"| `{r.name}` | {latent} | {r.prior} | {objective} | {reg} | {r.sampler} | "
                     f"{', '.join(r.families)} |")
    lines += ["", "| alias | = row | with |", "|---|---|---|"]
    lines += [f"| `{a.name}` | `{a.row}` | {', '.join(f'{k} {v}' for k, v in a.values.items())} "
              f"({', '.join(a.domains)}) |" for a in ALIASES]
    return "\n".join(lines)


def _configs(r: Row, extra: dict[str, Any] | None = None, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """{domain: family config with the row's values (+ ``extra``)} for the domains of the row's
    families (those in ``only`` when given)."""
    out: dict[str, Any] = {}
    for fam_name in r.families:
        if fam_name not in FAMILIES:
            continue  # a family that is not installed
        fam = FAMILIES.get(fam_name)
        for domain in fam.domains:
            if only is None or domain in only:
                out[domain] = fam.config(**r.values(fam_name), **(extra or {}))
    return out


def register_zoo() -> None:
    """Register every row and alias as a model (called once by catalog.load_all)."""
    for r in ROWS:
        configs = _configs(r)
        register_model(ModelSpec(r.name, r.summary, configs, build_model, tuple(configs), r.sampler, row=r.name))
    for a in ALIASES:
        r = row(a.row)
        configs = _configs(r, a.values, a.domains)
        what = ", ".join(f"{k} {v}" for k, v in a.values.items())
        register_model(ModelSpec(a.name, f"{r.name} with {what}: {r.summary}", configs, build_model,
                                 tuple(configs), r.sampler, row=r.name))
