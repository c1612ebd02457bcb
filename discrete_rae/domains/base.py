"""The domain interface and the shared machinery of the sequence domains.

A domain turns a :class:`~discrete_rae.config.RunConfig` into encoded tensors and a codec
(:meth:`Domain.prepare`) and judges a trained model (:meth:`Domain.evaluate`); the pipeline
calls nothing else, so adding a domain never touches the trainer or the models. The other
callers (commands, comparison, API) also encode, decode and sample through it.

:class:`Domain` is a :class:`typing.Protocol` listing every member callers use;
:class:`TextDomain` and :class:`PixelDomain` add what the string-only and image-only callers
use. A domain need not inherit anything; :class:`SequenceDomain` is the shared implementation
of the string domains (molecules, expressions).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.cache import texts_sha256
from ..data.errors import DataError, drop_counts
from ..codecs import CharCodec, GrammarCodec, SequenceCodec, codec_from_state
from ..config import EvalConfig, RunConfig
from ..grammar import Grammar
from ..io import write_text
from ..posterior_report import posterior_report

if TYPE_CHECKING:
    from ..metrics.images import FeatureExtractor

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Encoded splits and what produced them.

    train/val/test: example tensors ([N, L] token ids or [N, C, H, W] images).
    train_texts / test_texts: the strings behind the sequence splits (empty for images).
    info: counts, loader report and data hash, recorded in the run directory.
    """

    train: Tensor
    val: Tensor
    test: Tensor
    codec: Any
    train_texts: list[str] = field(default_factory=list)
    test_texts: list[str] = field(default_factory=list)
    labels: dict[str, Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Domain(Protocol):
    """What callers use of every domain (``DOMAINS.get(name)``): the pipeline, the commands, the
    comparison, the API. Kind-specific extras are in :class:`TextDomain` and :class:`PixelDomain`.

    ``isinstance(d, Domain)`` checks that the members exist; tests/test_domain_protocol.py also
    checks the parameter names of every method against the ones declared here.
    """

    name: str
    """The registry name (``--domain``)."""
    datasets: tuple[str, ...]
    """Built-in data set names (``--dataset``), shown by ``train.py --help``."""
    default_dataset: str
    """The data set used when ``--dataset`` is empty."""

    def prepare(self, run: RunConfig, codec_state: dict | None = None, progress: bool = True) -> Prepared:
        """Load, encode and split the run's data; ``codec_state`` (from a checkpoint) fixes the codec."""
        ...

    def encode(self, model: Any, x: Tensor, device: torch.device, batch: int = 500) -> Tensor:
        """Deterministic codes [N, D] (float32, CPU) of examples x (ids [N, L] or images [N, C, H, W])."""
        ...

    def decode(self, model: Any, z: Tensor, device: torch.device, batch: int = 500) -> Any:
        """Greedy decodes of codes z [N, D]: N strings (None = unfinished) or images [N, C, H, W] in [0, 1]."""
        ...

    def evaluate(self, model: Any, sampler: Any, prepared: Prepared, cfg: EvalConfig, run_dir: Path | None,
                 device: torch.device, progress: bool = True) -> dict[str, Any]:
        """Judge a trained model (samples, reconstruction); writes pictures into ``run_dir`` if given."""
        ...

    def sample_texts(self, model: Any, sampler: Any, n: int, device: torch.device, temperature: float = 0.0,
                     generator: torch.Generator | None = None) -> Sequence[str | None]:
        """``n`` decoded samples of ``sampler`` as lines of text (None = unfinished string)."""
        ...

    def sample_metrics(self, samples: Sequence[str | None], train_texts: list[str]) -> dict[str, Any]:
        """Summary figures of :meth:`sample_texts` output (validity etc. for strings)."""
        ...


@runtime_checkable
class TextDomain(Domain, Protocol):
    """A domain of strings (molecules, expressions): what the string-only callers add
    (interpolate, optimize, reconstruct, the API's encode/decode, the comparison's views)."""

    grammar_name: str
    """The built-in grammar of the domain; ``--grammar`` must start with it."""

    def decode(self, model: Any, z: Tensor, device: torch.device, batch: int = 500, temperature: float = 0.0,
               generator: torch.Generator | None = None) -> list[str | None]:
        """Decodes of codes z [N, D] (greedy at temperature 0, else sampled); None = unfinished."""
        ...

    def load_texts(self, run: RunConfig, progress: bool) -> tuple[list[str], dict[str, Any]]:
        """The raw strings of the run's data set (also a file path) and a load report."""
        ...

    def canonical(self, text: str) -> str | None:
        """The canonical spelling of ``text``, or None when it is not a valid string of the domain."""
        ...

    def reconstruction(self, model: Any, prepared: Prepared, cfg: EvalConfig, device: torch.device) -> dict[str, Any]:
        """Share of the held-out strings ``prepared.test`` [N, L] that decode to themselves."""
        ...

    def render(self, samples: list[str | None], path: Path) -> None:
        """Draw some valid strings (molecule grid, function plots) into the picture ``path``."""
        ...


@runtime_checkable
class PixelDomain(Domain, Protocol):
    """A domain of images: the comparison's views also judge samples in a classifier's features."""

    def decode(self, model: Any, z: Tensor, device: torch.device, batch: int = 500) -> Tensor:
        """Images [N, C, H, W] in [0, 1] (float32, CPU) decoded from codes z [N, D]."""
        ...

    def feature_extractor(self, dataset: str, data_dir: Path) -> FeatureExtractor:
        """The data set's cached feature classifier: images [N, C, H, W] -> features [N, F]."""
        ...


def split_indices(n: int, n_test: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split into train / val / test index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n_test, n // 5)
    n_val = max(1, int(round((n - n_test) * val_fraction)))
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


class SequenceDomain(ABC):
    """Shared logic of the string domains (a :class:`TextDomain`): split, encode with a codec,
    decode and judge samples.

    Subclasses set ``name``, ``datasets``, ``default_dataset`` and ``grammar_name``, implement
    :meth:`load_texts`, :meth:`canonical` (None = invalid) and :meth:`render`, and may override
    :meth:`extra_metrics` and :meth:`reference_form`.
    """

    name: str
    datasets: tuple[str, ...]
    default_dataset: str
    grammar_name: str

    @abstractmethod
    def load_texts(self, run: RunConfig, progress: bool) -> tuple[list[str], dict[str, Any]]:
        """The raw strings of the run's data set and a load report (counts, dropped lines)."""

    @abstractmethod
    def canonical(self, text: str) -> str | None:
        """The canonical spelling of ``text``, or None when it is not a valid string."""

    def reference_form(self, texts: list[str]) -> list[str]:
        """Data strings in the form :meth:`canonical` returns (compared with decoded samples)."""
        return list(texts)

    def extra_metrics(self, valid: list[str]) -> dict[str, Any]:
        """Domain-specific figures of the valid canonical samples (none by default)."""
        return {}

    @abstractmethod
    def render(self, samples: list[str | None], path: Path) -> None:
        """Draw some valid samples into the picture ``path``."""

    def make_codec(self, kind: str, texts: list[str], max_length: int, grammar: str = "") -> SequenceCodec:
        if kind == "grammar":  # an unknown name raises GrammarError (the CLI checks it first)
            return GrammarCodec(Grammar.builtin(grammar or self.grammar_name))
        return CharCodec.fit(texts, max_length or None)

    def prepare(self, run: RunConfig, codec_state: dict | None = None, progress: bool = True) -> Prepared:
        texts, report = self.load_texts(run, progress)
        codec = codec_from_state(codec_state) if codec_state else self.make_codec(
            run.model.codec, texts, run.model.max_length, getattr(run.model, "grammar", ""))
        cache_dir = Path(run.data.data_dir or _default_data_dir()) / "cache"
        enc = codec.encode(texts, cache_dir=cache_dir, workers=max(1, run.data.workers), progress=progress)
        if not enc.texts:
            example = f" (e.g. {enc.failures[0][1][:60]!r}: {enc.failures[0][2][:80]})" if enc.failures else ""
            raise DataError(f"dataset {run.data.dataset or self.default_dataset!r}: none of its {len(texts)} strings "
                            f"can be encoded by the {codec.kind} codec{example}")
        lengths = np.asarray(enc.lengths)
        if codec_state is None:  # fix the model's sequence length from the data
            codec.max_length = int(run.model.max_length or lengths.max())
        keep = lengths <= codec.max_length
        ids = torch.from_numpy(np.ascontiguousarray(enc.ids[keep, : codec.max_length]))
        kept = [t for t, k in zip(enc.texts, keep) if k]
        tr, va, te = split_indices(len(kept), run.data.n_test, run.train.val_fraction, run.train.seed)
        failures = Counter(reason.split(": ", 1)[-1].split(" at ")[0] for _, _, reason in enc.failures)
        info = {**report, "encoded": len(enc.texts), "encode_failures": dict(failures),
                "too_long": int((~keep).sum()), "n_train": len(tr), "n_val": len(va), "n_test": len(te),
                "max_length": codec.max_length, "mean_length": float(lengths.mean()),
                "data_hash": texts_sha256(kept), "loaded": len(texts), "n_kept": len(kept),
                "dropped": drop_counts(report.get("load_counts"), dict(failures), int((~keep).sum()))}
        if enc.failures:
            log.warning("%d of %d strings could not be encoded (%s); e.g. %r", len(enc.failures), len(texts),
                        dict(failures), enc.failures[0][1][:80])
        return Prepared(ids[tr], ids[va], ids[te], codec, [kept[i] for i in tr], [kept[i] for i in te], info=info)

    # --- evaluation -------------------------------------------------------------------------
    def decode(self, model: Any, z: Tensor, device: torch.device, batch: int = 500, temperature: float = 0.0,
               generator: torch.Generator | None = None) -> list[str | None]:
        """Decode codes [N, D] to strings (None = did not finish within max_length)."""
        out: list[str | None] = []
        model.eval()
        for chunk in z.split(batch):
            ids, finished = model.generate(chunk.to(device), greedy=temperature <= 0,
                                           temperature=max(temperature, 1e-6), generator=generator)
            out.extend(model.codec.to_text(ids.cpu(), finished.cpu()))
        return out

    def encode(self, model: Any, x: Tensor, device: torch.device, batch: int = 500) -> Tensor:
        """Deterministic codes [N, D] (float32, CPU) of token ids x [N, L]."""
        model.eval()
        return torch.cat([model.encode(chunk.to(device)).float().cpu() for chunk in x.split(batch)])

    def sample_texts(self, model: Any, sampler: Any, n: int, device: torch.device, temperature: float = 0.0,
                     generator: torch.Generator | None = None) -> list[str | None]:
        z = sampler.sample(n, generator=generator)
        return self.decode(model, z, device, temperature=temperature)

    def sample_metrics(self, samples: list[str | None], train_texts: list[str]) -> dict[str, Any]:
        """valid / unique / novel / unfinished of decoded samples (unique and novel over valid)."""
        n = len(samples)
        canon = [self.canonical(s) if s is not None else None for s in samples]
        valid = [c for c in canon if c is not None]
        unique = set(valid)
        train_set = set(self.reference_form(train_texts))
        novel = [c for c in unique if c not in train_set]
        return {"n_samples": n, "valid": len(valid) / max(n, 1), "unique": len(unique) / max(len(valid), 1),
                "novel": len(novel) / max(len(unique), 1), "unfinished": sum(s is None for s in samples) / max(n, 1),
                **self.extra_metrics(valid)}

    def reconstruction(self, model: Any, prepared: Prepared, cfg: EvalConfig, device: torch.device) -> dict[str, Any]:
        """Greedy: decode the code of each held-out string once, argmax; share equal to the input.

        ``stochastic`` (GVAE protocol): 10 posterior draws per input (the mean for deterministic
        codes), each decoded 100 times with sampling; share of decodes equal to the input.
        """
        ids, truth = prepared.test, self.reference_form(prepared.test_texts)
        if len(truth) == 0:
            return {"recon_accuracy": float("nan"), "n_recon": 0}
        if cfg.recon_protocol == "stochastic":
            return self._stochastic_recon(model, ids, truth, device)
        decoded = self.decode(model, self.encode(model, ids, device), device)
        hits = sum(d is not None and self.canonical(d) == t for d, t in zip(decoded, truth))
        return {"recon_accuracy": hits / len(truth), "n_recon": len(truth), "recon_protocol": "greedy"}

    def _stochastic_recon(self, model: Any, ids: Tensor, truth: list[str], device: torch.device,
                          n_enc: int = 10, n_dec: int = 100) -> dict[str, Any]:
        hits = total = 0
        for x, t in tqdm(list(zip(ids, truth)), desc="stochastic reconstruction", leave=False):
            xb = x.unsqueeze(0).repeat(n_enc, 1).to(device)
            model.latent.train()  # posterior sampling for stochastic latents; no-op for RAEs
            with torch.no_grad():
                z = model.latent(model.encoder.eval()(xb)).z
            model.latent.eval()
            decoded = self.decode(model, z.repeat_interleave(n_dec, 0), device, temperature=1.0)
            hits += sum(d is not None and self.canonical(d) == t for d in decoded)
            total += len(decoded)
        return {"recon_accuracy": hits / max(total, 1), "n_recon": len(truth), "recon_protocol": "stochastic"}

    def evaluate(self, model: Any, sampler: Any, prepared: Prepared, cfg: EvalConfig, run_dir: Path | None,
                 device: torch.device, progress: bool = True) -> dict[str, Any]:
        t0 = time.monotonic()
        samples = self.sample_texts(model, sampler, cfg.n_samples, device, cfg.temperature)
        metrics = {**self.sample_metrics(samples, prepared.train_texts), "sampler": sampler.name,
                   **self.reconstruction(model, prepared, cfg, device),
                   **posterior_report(model, prepared.test, device, int(prepared.info.get("seed", 0)))}
        metrics["eval_seconds"] = round(time.monotonic() - t0, 1)
        if run_dir is not None:
            write_text(run_dir / "samples.txt", "\n".join("<unfinished>" if s is None else s for s in samples) + "\n")
            try:
                self.render(samples, run_dir / "samples.png")
            except Exception as err:  # a picture must never cost the metrics
                log.warning("could not draw samples.png: %s", err)
        return metrics


def _default_data_dir() -> Path:
    from ..data.molecules import default_data_dir

    return default_data_dir()

