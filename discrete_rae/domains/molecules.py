"""The molecules domain: SMILES from MOSES / ZINC / NCI / a file, judged by RDKit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..registry import DOMAINS
from .base import SequenceDomain


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
        return list(data.smiles), {"dataset": d.dataset or self.default_dataset, "load_report": data.report.summary(),
                                   "kekulize": d.kekulize}

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
