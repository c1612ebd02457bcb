"""The molecules domain: SMILES from MOSES / ZINC / NCI / a file, judged by RDKit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..codecs import SequenceCodec
from ..config import EvalConfig, RunConfig
from ..registry import DOMAINS
from .base import Prepared, SequenceDomain


class MoleculeDomain(SequenceDomain):
    """SMILES strings; validity = RDKit parse + sanitize; comparisons on canonical SMILES."""

    name = "molecules"
    grammar_name = "smiles"
    datasets = ("moses", "zinc250k", "nci5k")
    default_dataset = "moses"

    def load_texts(self, run: RunConfig, progress: bool) -> tuple[list[str], dict[str, Any]]:
        from ..data.molecules import load_molecules

        d = run.data
        data = load_molecules(d.dataset or self.default_dataset, n=d.n_train or None, seed=run.train.seed,
                              data_dir=Path(d.data_dir) if d.data_dir else None, column=d.column or None,
                              progress=progress, kekulize=d.kekulize)
        return list(data.smiles), {"dataset": d.dataset or self.default_dataset,
                                   "load_report": data.report.summary(), "load_counts": data.report.counts(),
                                   "kekulize": d.kekulize}

    def make_codec(self, kind: str, texts: list[str], max_length: int, grammar: str = "") -> SequenceCodec:
        if kind == "selfies":  # vocabulary from the training SMILES, like the character codec
            from ..selfies_codec import SelfiesCodec

            return SelfiesCodec.fit(texts, max_length or None)
        return super().make_codec(kind, texts, max_length, grammar)

    def reconstruction(self, model: Any, prepared: Prepared, cfg: EvalConfig, device: torch.device) -> dict[str, Any]:
        """Greedy reconstruction, and beside it (``beam_width`` > 0, greedy protocol) the same
        held-out codes decoded by beam search: ``recon_accuracy_beam``, the share whose best
        beam equals the input, with the decoding time of each."""
        t0 = time.monotonic()
        out = super().reconstruction(model, prepared, cfg, device)
        width = int(getattr(cfg, "beam_width", 0) or 0)
        if width <= 0 or out.get("recon_protocol") != "greedy" or not prepared.test_texts:
            return out
        from ..beam import beam_decode_texts

        out["recon_seconds"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        z = self.encode(model, prepared.test, device)
        decoded = beam_decode_texts(model, z, width, device)
        truth = self.reference_form(prepared.test_texts)  # canonical aromatic, as the greedy score compares
        hits = sum(d is not None and self.canonical(d) == t for d, t in zip(decoded, truth))
        out.update({"recon_accuracy_beam": hits / len(truth), "beam_width": width,
                    "recon_seconds_beam": round(time.monotonic() - t0, 2)})
        return out

    def canonical(self, text: str) -> str | None:
        from ..chem import canonical

        return canonical(text)

    def reference_form(self, texts: list[str]) -> list[str]:
        """RDKit canonical (aromatic) SMILES of the data, which may be stored in Kekule form."""
        return [self.canonical(t) or t for t in texts]

    def render(self, samples: list[str | None], path: Path) -> None:
        from ..chem import draw_grid

        valid = [s for s in samples if s is not None and self.canonical(s) is not None][:24]
        draw_grid(valid, path)


DOMAINS.register("molecules", MoleculeDomain())
