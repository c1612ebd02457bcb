"""A Python API over a trained run: ``discrete_rae.load("runs/NAME")``.

    import discrete_rae
    model = discrete_rae.load("runs/grammar_rae-expressions")
    z = model.encode(["x*sin(x)", "exp(x)+1"])        # Tensor [2, latent_dim]
    model.decode(z)                                   # greedy: ['x*sin(x)', 'exp(x)+1'] when it reconstructs
    model.reconstruct(["x*sin(x)"])                   # decode(encode(...))
    model.sample(10)                                  # from the run's default ex-post sampler

Strings are SMILES (molecules runs) or expressions (expressions runs); they are put into the
domain's canonical spelling before encoding, as the training data were. The code of a string is
the encoder's deterministic code (posterior mean, or argmax one-hot for categorical latents).
Decoding is greedy; ``None`` marks a decode that did not finish within the model's length.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import UsageError
from .registry import DOMAINS
from .runtime import choose_device

if TYPE_CHECKING:
    from .domains.base import Domain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeFailure:
    """A string that cannot be encoded: its position in the input, the string and why."""

    index: int
    text: str
    reason: str


class EncodeError(UsageError):
    """Some strings cannot be encoded; ``failures`` lists them all (the message names the first)."""

    def __init__(self, failures: Sequence[EncodeFailure], total: int) -> None:
        first = failures[0]
        super().__init__(f"{len(failures)} of {total} strings cannot be encoded; the first (index {first.index}) "
                         f"is {first.text[:80]!r}: {first.reason}")
        self.failures = list(failures)


class Model:
    """A loaded run: encode strings to codes, decode codes to strings, sample, reconstruct."""

    def __init__(self, loaded: Any, device: torch.device) -> None:
        self.loaded = loaded
        self.device = device
        self.domain: Domain = DOMAINS.get(loaded.run.domain)

    @property
    def run(self) -> Any:
        """The run's :class:`~discrete_rae.config.RunConfig`."""
        return self.loaded.run

    @property
    def run_dir(self) -> Path:
        return self.loaded.run_dir

    @property
    def samplers(self) -> list[str]:
        """Names of the ex-post samplers fitted in this run."""
        return sorted(self.loaded.samplers)

    def _strings_only(self, what: str) -> None:
        from .domains.base import TextDomain

        if not isinstance(self.domain, TextDomain):
            raise UsageError(f"{what} works on strings; {self.run_dir} is a {self.run.domain} run")

    def try_encode(self, strings: Sequence[str]) -> tuple[Tensor, list[int], list[EncodeFailure]]:
        """Codes [K, D] of the K strings that can be encoded, their positions in ``strings`` and the
        failures (not a valid string of the domain, not derivable by the run's codec, or longer than
        the model's sequence length)."""
        self._strings_only("encode")
        noun = {"molecules": "SMILES string", "expressions": "expression"}.get(self.run.domain, "string")
        failures: list[EncodeFailure] = []
        canon, positions = [], []
        for i, text in enumerate(strings):
            c = self.domain.canonical(text) if text.strip() else None
            if c is None:
                failures.append(EncodeFailure(i, text, f"not a valid {noun}" if text.strip() else "empty"))
            else:
                canon.append(c)
                positions.append(i)
        codec = self.loaded.model.codec
        with tempfile.TemporaryDirectory() as scratch:  # ad-hoc strings: not worth a parse-cache entry
            enc = codec.encode(canon, cache_dir=Path(scratch), progress=False)
        rejected = {j: reason for j, _, reason in enc.failures}
        kept = [j for j in range(len(canon)) if j not in rejected]  # rows of enc.ids, in order
        for j, reason in rejected.items():
            failures.append(EncodeFailure(positions[j], strings[positions[j]],
                                          f"the run's {codec.kind} codec cannot encode it: "
                                          f"{reason.removeprefix(repr(canon[j]) + ': ')}"))
        lengths = np.asarray(enc.lengths)
        fits = lengths <= codec.max_length
        for row in np.flatnonzero(~fits):
            j = kept[row]
            failures.append(EncodeFailure(positions[j], strings[positions[j]],
                                          f"needs {int(lengths[row])} steps, more than the model's {codec.max_length}"))
        rows = np.flatnonzero(fits)
        failures.sort(key=lambda f: f.index)
        ok = [positions[kept[row]] for row in rows]
        if not len(rows):
            return torch.zeros(0, self.latent_dim), ok, failures
        ids = torch.from_numpy(np.ascontiguousarray(np.asarray(enc.ids)[rows, : codec.max_length]))
        return self.domain.encode(self.loaded.model, ids, self.device), ok, failures

    @property
    def latent_dim(self) -> int:
        """Width D of a code (N*K for a categorical latent of N variables with K classes)."""
        return int(self.loaded.model.latent.code_dim)

    def encode(self, strings: Sequence[str]) -> Tensor:
        """Codes [N, D] of ``strings``; :class:`EncodeError` (naming the first bad string and the
        count) if any cannot be encoded."""
        strings = list(strings)
        codes, _, failures = self.try_encode(strings)
        if failures:
            raise EncodeError(failures, len(strings))
        return codes

    def decode(self, z: Tensor) -> list[str | None]:
        """Greedy decodes of codes z [N, D] (None: did not finish within the model's length)."""
        self._strings_only("decode")
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise UsageError(f"decode needs codes of shape [N, {self.latent_dim}], got {list(z.shape)}")
        return self.domain.decode(self.loaded.model, z, self.device, temperature=0.0)

    def reconstruct(self, strings: Sequence[str]) -> list[str | None]:
        """decode(encode(strings)); raises :class:`EncodeError` like :meth:`encode`."""
        return self.decode(self.encode(strings))

    def sample(self, n: int, sampler: str | None = None, seed: int | None = None) -> list[str | None]:
        """``n`` greedy decodes of codes drawn from an ex-post sampler (default: the run's)."""
        from .pipeline import pick_sampler

        self._strings_only("sample")
        if n <= 0:
            raise UsageError(f"sample: n must be positive, got {n}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        z = pick_sampler(self.loaded, sampler).sample(n, generator=generator)
        return self.decode(z)


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> Model:
    """Load the run in ``run_dir`` (its checkpoint.pt) on ``device`` (``cpu``, ``cuda``, ``auto``)."""
    from .pipeline import load_run

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").is_file():
        raise UsageError(f"{run_dir}: no checkpoint.pt (not a run directory, or training has not saved one yet)")
    device = choose_device(device)
    return Model(load_run(run_dir, device), device)
