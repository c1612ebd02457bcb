"""``python -m discrete_rae interpolate``: decode paths and neighbourhoods in a run's latent space.

    python -m discrete_rae interpolate --run runs/grammar_rae-molecules --from CCO --to c1ccccc1 --path slerp
    python -m discrete_rae interpolate --run runs/grammar_rae-expressions --around "sin( x ) + x" --n 25

Both modes encode the given strings with the run's codec and encoder (posterior mean for a VAE),
build codes around them and greedy-decode every code (temperature 0). Reported: the decoded
strings in order, whether each is valid (the domain's ``canonical`` accepts it) and the share
of valid decodes ("validity along the path"); a JSON file and a picture go to ``--out``.

Paths between codes z0 and z1 (t = 0, 1/(S-1), ..., 1):

- ``line``:  z(t) = (1 - t) z0 + t z1.
- ``slerp``: the direction moves along the great circle between u0 = z0/|z0| and u1 = z1/|z1|
  at constant angular speed, u(t) = [sin((1-t) W) u0 + sin(t W) u1] / sin W with
  W = arccos(u0 . u1), and the norm is interpolated linearly, |z(t)| = (1 - t)|z0| + t|z1|.
  So the angle between u(t) and u0 is t W, and both endpoints are exact. When u0 and u1 are
  (anti-)parallel the great circle is undefined or numerically unstable; then the line is used.

Neighbourhood of a code z: n Gaussian perturbations z + radius * s * e, e ~ N(0, I), where s is
the per-dimension standard deviation of the training codes. Scaling by s makes ``radius`` a
distance in units of the data's own spread along each axis (RAE codes are not unit-scaled, and
a VAE's unused dimensions have a tiny spread), so one radius means the same on every model.
Gaussian rather than fixed-length random directions: the points then fill the ball instead of
lying on one shell, which shows how the decode changes with distance (each point's scaled
distance |e| * radius is reported and the points are listed nearest first).
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import UsageError

if TYPE_CHECKING:
    from .domains.base import TextDomain

log = logging.getLogger(__name__)

PATHS = ("line", "slerp")
# Below this angle (radians) between the two codes, or within it of pi, slerp falls back to the line.
_MIN_ANGLE = 1e-4


@dataclass
class PathPoint:
    """One decoded code: ``t`` is the position on the path (0..1) or, for a neighbourhood, the
    scaled distance from the centre; ``text`` is the greedy decode (None: unfinished)."""

    t: float
    text: str | None
    valid: bool


# --- latent geometry ----------------------------------------------------------------------------
def interpolate_codes(z0: Tensor, z1: Tensor, steps: int, path: str = "line") -> tuple[Tensor, Tensor]:
    """Codes along a path from z0 [D] to z1 [D]; returns (t [steps], codes [steps, D]).

    ``path`` is ``line`` or ``slerp`` (see the module docstring for the formulas).
    """
    if steps < 2:
        raise ValueError("steps must be at least 2")
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; choose one of: {', '.join(PATHS)}")
    t = torch.linspace(0, 1, steps, dtype=torch.float64)
    a, b = z0.double(), z1.double()
    if path == "slerp" and _angle(a, b) is not None:
        codes = _slerp(a, b, t)
    else:
        codes = (1 - t)[:, None] * a + t[:, None] * b
    codes[0], codes[-1] = a, b  # exact endpoints, free of rounding
    return t.to(z0.dtype), codes.to(z0.dtype)


def _angle(a: Tensor, b: Tensor) -> float | None:
    """Angle between a and b, or None when slerp is ill-defined (a zero or (anti-)parallel code)."""
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return None
    angle = float(torch.arccos(torch.clamp((a / na) @ (b / nb), -1.0, 1.0)))
    return angle if _MIN_ANGLE < angle < math.pi - _MIN_ANGLE else None


def _slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Great-circle direction (constant angular speed) times the linearly interpolated norm; [S, D]."""
    na, nb = a.norm(), b.norm()
    w = torch.arccos(torch.clamp((a / na) @ (b / nb), -1.0, 1.0))
    u = (torch.sin((1 - t) * w)[:, None] * (a / na) + torch.sin(t * w)[:, None] * (b / nb)) / torch.sin(w)
    return u * ((1 - t) * na + t * nb)[:, None]


def neighbourhood(z: Tensor, n: int, radius: float, scale: Tensor,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """n Gaussian perturbations of the code z [D]: z + radius * scale * e, e ~ N(0, I).

    ``scale`` [D] is the per-dimension spread of the training codes. Returns (distance [n],
    codes [n, D]) sorted by the scaled distance radius * |e|, nearest first.
    """
    eps = torch.randn(n, z.shape[-1], generator=generator, dtype=torch.float64)
    dist = radius * eps.norm(dim=1)
    order = dist.argsort()
    codes = z.double() + radius * scale.double() * eps
    return dist[order].to(z.dtype), codes[order].to(z.dtype)


# --- run, codec, decoding -----------------------------------------------------------------------
def load_sequence_run(run_dir: Path, device: torch.device) -> tuple[Any, TextDomain]:
    """(LoadedRun, domain) of a run on a sequence domain with a continuous latent."""
    from .domains.base import TextDomain
    from .pipeline import load_run
    from .registry import DOMAINS

    loaded = load_run(Path(run_dir), device)
    domain = DOMAINS.get(loaded.run.domain)
    if not isinstance(domain, TextDomain):
        raise UsageError(f"{run_dir} is a {loaded.run.domain} run; this command works on molecules "
                             "and expressions runs")
    if getattr(loaded.model.latent, "discrete", False):
        raise UsageError(f"{run_dir} has a categorical latent ({loaded.run.model_name}); this command "
                             "needs a continuous code")
    return loaded, domain


def encode_texts(loaded: Any, domain: TextDomain, texts: Sequence[str], device: torch.device) -> Tensor:
    """Codes [K, D] of the strings, in the domain's canonical spelling (as in the training data).

    A string that is invalid, that the codec cannot encode or that is longer than the model's
    sequence length is a usage error naming the string.
    """
    codec = loaded.model.codec
    canon = []
    for text in texts:
        c = domain.canonical(text)
        if c is None:
            raise UsageError(f"{text!r} is not a valid {loaded.run.domain[:-1]}")
        canon.append(c)
    with tempfile.TemporaryDirectory() as scratch:  # a few strings: not worth a parse-cache entry
        enc = codec.encode(canon, cache_dir=Path(scratch), progress=False)
    if enc.failures:
        _, text, reason = enc.failures[0]
        reason = reason.removeprefix(f"{text!r}: ")  # the grammar's message may start with the text
        raise UsageError(f"{text!r} cannot be encoded by the run's {codec.kind} codec: {reason}")
    too_long = [t for t, n in zip(enc.texts, enc.lengths) if n > codec.max_length]
    if too_long:
        raise UsageError(f"{too_long[0]!r} needs more than the model's {codec.max_length} steps")
    ids = torch.from_numpy(np.ascontiguousarray(enc.ids[:, : codec.max_length]))
    return domain.encode(loaded.model, ids, device)


def training_codes(loaded: Any, domain: TextDomain, device: torch.device, n: int = 2000, seed: int = 0,
                   progress: bool = False) -> Tensor:
    """Codes [min(n, N), D] of a seeded random subset of the run's training strings."""
    prepared = domain.prepare(loaded.run, codec_state=loaded.checkpoint["codec"], progress=progress)
    pick = np.random.default_rng(seed).permutation(len(prepared.train))[:n]
    return domain.encode(loaded.model, prepared.train[torch.from_numpy(np.sort(pick))], device)


def decode_path(domain: TextDomain, model: Any, codes: Tensor, device: torch.device, t: Tensor) -> list[PathPoint]:
    """Greedy decodes of codes [S, D] as PathPoints at positions t [S]."""
    texts = domain.decode(model, codes, device, temperature=0.0)
    return [PathPoint(float(ti), s, s is not None and domain.canonical(s) is not None)
            for ti, s in zip(t.tolist(), texts)]


def validity(points: Sequence[PathPoint]) -> float:
    """Share of valid decodes."""
    return sum(p.valid for p in points) / max(len(points), 1)


# --- pictures -----------------------------------------------------------------------------------
def plot_expressions(texts: Sequence[str | None], labels: Sequence[str], path: Path, title: str,
                     reference: tuple[str, np.ndarray] | None = None) -> None:
    """Curves of the expressions on [-10, 10] in one axis, coloured in order; ``reference`` is a
    (label, values on expr_eval.GRID) curve drawn in black (e.g. a target function)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .expr_eval import GRID, ExpressionError, evaluate

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.cm.viridis(np.linspace(0, 1, max(len(texts), 2)))
    for text, label, colour in zip(texts, labels, colours):
        try:
            y = evaluate(text, GRID) if text is not None else None
        except ExpressionError:
            y = None
        if y is not None:
            ax.plot(GRID, np.where(np.isfinite(y), np.clip(y, -1e3, 1e3), np.nan), color=colour, lw=1.2,
                    label=f"{label}: {text if len(text) < 40 else text[:37] + '...'}")
    if reference is not None:
        ax.plot(GRID, reference[1], color="black", lw=2, ls="--", label=reference[0])
    # linear within +-10 (where f* and most curves live), logarithmic beyond: one exploding
    # curve does not flatten all the others
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("x")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render_points(domain_name: str, texts: Sequence[str | None], labels: Sequence[str], path: Path,
                  title: str, per_row: int = 5) -> None:
    """Molecules: an RDKit grid in order with the labels as legends; expressions: curves."""
    if domain_name == "molecules":
        from .chem import draw_grid

        draw_grid(list(texts), path, n_per_row=per_row, legends=list(labels))
    else:
        plot_expressions(texts, labels, path, title)
