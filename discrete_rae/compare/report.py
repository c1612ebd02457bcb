"""The comparison's report: report.md (verdict, tables, pictures) and comparison.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..io import write_json, write_text
from .side import Side
from .views import VIEWS, _slug


# --- the report --------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    header = [h.replace("|", "\\|") for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]


def _setup_rows(sides: list[Side]) -> list[list[Any]]:
    rows = []
    for s in sides:
        m, tr = s.run.model, s.loaded.checkpoint.get("trainer", {})
        code = f"{m.n_vars}x{m.n_classes} one-hot" if s.discrete else f"{s.model.latent.code_dim}-d"
        params = sum(p.numel() for p in s.model.parameters())
        reg = f"{m.decoder_reg} ({m.reg_weight:g})" if m.decoder_reg != "none" else "none"
        rows.append([s.label, f"{m.latent} ({code})", m.beta, reg, params, tr.get("epochs", tr.get("epoch")),
                     tr.get("step"), f"{float(tr.get('seconds', 0.0)):.1f}", tr.get("stopped") or "epochs done"])
    return rows


def _recon_rows(sides: list[Side]) -> list[list[Any]]:
    keys = [("recon_nats", "-log p(x|code), nats/example"), ("recon_bits", "-log p(x|code), bits/example"),
            ("recon_mse", "pixel MSE"), ("recon_accuracy", "exact reconstruction (greedy)"),
            ("token_accuracy", "token accuracy"), ("neg_elbo", "negative ELBO, nats"),
            ("neg_iwae", "importance-weighted bound, nats")]
    rows = []
    for key, name in keys:
        values = [s.results.get(key) for s in sides]
        if any(v is not None for v in values):
            if key == "neg_iwae":
                name += f" (k={max(s.results.get('iw_k', 0) for s in sides)})"
            rows.append([name, *values])
    return rows


def _sampler_rows(side: Side, view: Any) -> tuple[list[str], list[list[Any]]]:
    quality = side.results["samplers"]
    metric_keys = sorted({k for v in quality.values() for k in v if k != "seconds"},
                         key=lambda k: (k != view.quality_key, k))
    rows = []
    for name, metrics in quality.items():
        mark = " (default)" if name == side.results["default_sampler"] else ""
        mark += " **best**" if name == side.results["best_sampler"] else ""
        rows.append([name + mark, *[metrics.get(k) for k in metric_keys]])
    return ["sampler", *metric_keys], rows


def _code_rows(sides: list[Side]) -> list[list[Any]]:
    keys = [("entropy_mean", "per-variable entropy, mean (nats)"), ("entropy_min", "per-variable entropy, min"),
            ("max_entropy", "max entropy log K"), ("perplexity_mean", "per-variable perplexity, mean"),
            ("unused_classes", "share of classes never used"), ("active_vars", "active variables"),
            ("n_vars", "variables"), ("distinct_codes", "distinct codes / training examples"),
            ("active_units", "active units (continuous)"), ("dims", "code dimensions")]
    rows = []
    for key, name in keys:
        values = [s.results["codes"].get(key) for s in sides]
        if any(v is not None for v in values):
            rows.append([name, *values])
    for key, name in [("mi", "I(X; C) estimate, nats"), ("mi_per_var_sum", "sum_n I(X; C_n), nats"),
                      ("mi_upper_log_m", "upper limit log M, nats")]:
        rows.append([name, *[s.results["mi"].get(key) for s in sides]])
    probe = [s.results["probe"] for s in sides]
    if any("probe_score" in p for p in probe):
        what = next(p for p in probe if "probe_score" in p)
        rows.append([f"linear probe: {what['probe']} ({what['probe_metric']})", *[p.get("probe_score") for p in probe]])
        rows.append(["probe baseline (majority class / r^2 = 0)", *[p.get("probe_baseline") for p in probe]])
    return rows


def verdict(sides: list[Side], view: Any) -> list[str]:
    """Plain statements on the two targets: reconstruction and best-sampler sample quality."""
    a, b = sides
    lines = []
    ra, rb = a.results["recon_nats"], b.results["recon_nats"]
    better = b.label if rb < ra else a.label if ra < rb else "neither"
    lines.append(f"- Reconstruction (-log p(x|code), nats/example): {a.label} {ra:.3f}, {b.label} {rb:.3f} "
                 f"-> better: **{better}**.")
    key = view.quality_key
    qa = a.results["samplers"][a.results["default_sampler"]][key]
    qa_best = a.results["samplers"][a.results["best_sampler"]][key]
    qb = b.results["samplers"][b.results["best_sampler"]][key]
    ratio = qb / qa if qa else math.nan
    if view.better == "min":
        ok, rule = qb <= 1.10 * qa, f"{b.label}'s best <= 1.10 x {a.label}'s default"
    else:
        ok, rule = qb >= 0.90 * qa, f"{b.label}'s best >= 0.90 x {a.label}'s default"
    lines.append(f"- Sample quality ({key}, {'lower' if view.better == 'min' else 'higher'} is better): "
                 f"{a.label} with its default sampler `{a.results['default_sampler']}` {qa:.3f} "
                 f"(its best, `{a.results['best_sampler']}`: {qa_best:.3f}); {b.label} with its best sampler "
                 f"`{b.results['best_sampler']}` {qb:.3f}; ratio {_fmt(ratio)} -> {rule}: **{'yes' if ok else 'no'}**.")
    if a.results["best_sampler"] != a.results["default_sampler"]:
        lines.append(f"- Best against best: {b.label} {qb:.3f} vs {a.label} {qa_best:.3f} "
                     f"(ratio {_fmt(qb / qa_best if qa_best else math.nan)}).")
    copies = b.results["samplers"][b.results["best_sampler"]].get("code_copies")
    if copies is not None:
        lines.append(f"- {b.label}'s best sampler draws a code identical to a training code in {copies:.1%} of the "
                     "samples (a memorising prior would score well by replaying the training set).")
    return lines


def write_report(sides: list[Side], out_dir: Path, pictures: list[str], meta: dict[str, Any]) -> Path:
    """report.md and comparison.json in ``out_dir``."""
    view = VIEWS[sides[0].run.domain]
    a, b = sides
    dataset = sides[0].run.data.dataset or sides[0].run.domain
    lines = [f"# {a.label} vs {b.label} on {sides[0].run.domain} ({dataset})", "",
             f"Command: `{meta['command']}`  ", f"Device: {meta['device']}; preset `{meta['preset']}`; "
             f"total wall time {meta['wall_s']:.0f} s (training {meta['train_s']:.0f} s, evaluation "
             f"{meta['eval_s']:.0f} s).  ", f"Runs: {', '.join(f'`{s.loaded.run_dir}`' for s in sides)}", "",
             "## Verdict", "", *verdict(sides, view), "", "## Setup (same preset, overrides and seed)", "",
             *_table(["model", "latent", "beta", "decoder reg.", "parameters", "epochs", "steps", "train s",
                      "stopped"], _setup_rows(sides)), "",
             f"Evaluation on the first {a.results['n_eval']} test examples; {a.results['n_samples']} samples per "
             f"sampler; importance-weighted bound with k = {meta['iw_k']}"
             + (f" ({meta['preset']} mode: fewer than the paper's k = 1000)" if meta["iw_k"] < 1000 else "") + ".",
             "",
             "## Reconstruction", "", *_table(["metric", a.label, b.label], _recon_rows(sides)), ""]
    if sides[0].run.domain == "images":
        lines += ["Pixel likelihood as trained (the Gaussian likelihood drops its constant "
                  "C*H*W * 1/2 log(2 pi sigma^2), so its nats are relative).", ""]
    lines += ["## Sample quality by ex-post sampler", ""]
    for s in sides:
        header, rows = _sampler_rows(s, view)
        lines += [f"**{s.label}**", "", *_table(header, rows), ""]
    ref = a.results.get("reference") or {}
    for key, value in ref.items():
        lines += [f"Reference: {key} = {value:.3f} (the floor at this sample size).", ""]
    lines += ["## Codes", "", *_table(["statistic", a.label, b.label], _code_rows(sides)), ""]
    lines += _perturbation_section(sides, view)
    lines += _path_section(sides)
    lines += _samples_section(sides, view, pictures)
    lines += ["## Definitions", "", _DEFINITIONS, "", "## Timing (seconds)", "",
              *_table(["part", a.label, b.label],
                      [[k, *[s.results.get(f"timing_{k}_s") for s in sides]] for k in ("recon", "codes", "samples")]),
              ""]
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines))
    payload = {"meta": meta, "sides": {s.label: {"run_dir": str(s.loaded.run_dir), **s.results} for s in sides}}
    write_json(out_dir / "comparison.json", payload, default=_json_default)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Tensor):
        return obj.tolist()
    return str(obj)


def _perturbation_section(sides: list[Side], view: Any) -> list[str]:
    flips = sorted({r for s in sides for r in s.results.get("perturbed", {})}, key=int)
    if not flips:
        return []
    rows = [[r, *[s.results.get("perturbed", {}).get(r, {}).get(view.quality_key) for s in sides]] for r in flips]
    return ["## Decoder smoothness in code space", "",
            f"{view.quality_key} of the decoded evaluation codes after resampling r of the variables uniformly "
            "(r = 0: the reconstructions). A decoder that stays good off the training codes forgives an "
            "imperfect ex-post density.", "", *_table(["r", *[s.label for s in sides]], rows), ""]


def _path_section(sides: list[Side]) -> list[str]:
    lines = ["## Paths between codes", ""]
    for s in sides:
        lengths = s.results.get("path_lengths", [])
        line = f"- {s.label}: {s.shown.get('path_kind', '')}s, lengths {lengths}"
        if "path_validity_mean" in s.results["paths"]:
            curve = ", ".join(_fmt(v, 2) for v in s.results["paths"]["path_validity_by_t"])
            line += f"; valid decodes along the path {s.results['paths']['path_validity_mean']:.2f} (by t: {curve})"
        lines.append(line)
    example = [(s.label, s.shown.get("path_example")) for s in sides if s.shown.get("path_example")]
    for label, texts in example:
        lines += ["", f"First path of {label}:", "", "```", *texts[:16], "```"]
    return lines + ["", "![paths](paths.png)", ""]


def _samples_section(sides: list[Side], view: Any, pictures: list[str]) -> list[str]:
    lines = ["## Samples", ""]
    if "samples.png" in pictures:
        lines += ["Real test data next to each model's best sampler:", "", "![samples](samples.png)", ""]
    if "samples-real.png" in pictures:
        lines += ["real (test): ![samples-real.png](samples-real.png)", ""]
    for s in sides:
        for name in (f"samplers-{_slug(s.label)}.png", f"samples-{_slug(s.label)}.png"):
            if name in pictures:
                lines += [f"{s.label}: ![{name}]({name})", ""]
    texts = [(s.label, view.text_lines(s.shown["samples"][s.results["best_sampler"]], 10)) for s in sides]
    if any(t for _, t in texts):
        lines += ["```", "real: " + " | ".join(view.text_lines(view.real(sides[0], 8), 8))]
        lines += [f"{label}: " + " | ".join(t) for label, t in texts]
        lines += ["```", ""]
    if "embedding.png" in pictures:
        lines += ["![embedding](embedding.png)", ""]
    return lines


_DEFINITIONS = """\
- Reconstruction uses the deterministic code (posterior mean, or argmax one-hot); negative ELBO
  and the importance-weighted bound -log 1/k sum_i p(x|z_i) p(z_i) / q(z_i|x) use exact draws
  z_i ~ q(z|x) (one-hot for categorical latents), from the same k draws.
- Sample quality: every ex-post sampler fitted to the training codes draws n codes that are
  decoded greedily. `code_copies`: share of drawn discrete codes equal to some training code.
- Per-variable entropy: H_n = -sum_k f_nk log f_nk with f_nk the share of training codes whose
  variable n takes class k; perplexity exp(H_n); active variable: max_k f_nk < 0.99.
- I(X; C): 1/M sum_i E_{c~q(.|x_i)} [log q(c|x_i) - log 1/M sum_j q(c|x_j)] over the M evaluation
  examples (S Monte Carlo draws per example for stochastic encoders, the plug-in code entropy for
  deterministic ones); it cannot exceed log M. sum_n I(X; C_n) is computed exactly per variable.
- Linear probe: standardised codes of the training split, logistic regression (C = 0.1) or ridge
  (alpha = 1), scored on the evaluation examples.
- Paths: for discrete codes, the classes of code a are replaced by those of code b one variable at
  a time (random order), so consecutive codes differ in one variable; continuous codes: linear."""
