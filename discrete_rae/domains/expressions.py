"""The expressions domain: the Grammar VAE's univariate arithmetic expressions."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..expr_eval import GRID, ExpressionError, evaluate, is_finite_on_grid
from ..grammar import Grammar, GrammarError
from ..registry import DOMAINS
from .base import SequenceDomain


class ExpressionDomain(SequenceDomain):
    """Expressions like ``sin( x ) + 3 * x``; valid = derivable in the expression grammar."""

    name = "expressions"
    grammar_name = "expressions"
    datasets = ("generated",)
    default_dataset = "generated"

    @cached_property
    def grammar(self) -> Grammar:
        return Grammar.builtin(self.grammar_name)

    @cached_property
    def language(self) -> Grammar:
        """The expression grammar without the model's length limit: validity is membership in
        the language, whatever grammar (e.g. ``expressions_compact``) or length the model used."""
        return Grammar.builtin(self.grammar_name, max_length=10_000)

    def load_texts(self, run: RunConfig, progress: bool) -> tuple[list[str], dict[str, Any]]:
        from ..data.expressions import load_expressions

        d = run.data
        data = load_expressions(d.dataset or self.default_dataset, n=d.n_train or 100_000, seed=run.train.seed,
                                grammar=self.grammar)
        return list(data.expressions), {"dataset": d.dataset or self.default_dataset,
                                        "load_report": data.report.summary(), "load_counts": data.report.counts()}

    def canonical(self, text: str) -> str | None:
        """The grammar's canonical spelling, or None when the text is not in the language."""
        try:
            return self.language.unparse(self.language.parse(text))
        except GrammarError:
            return None

    def sample_metrics(self, samples: list[str | None], train_texts: list[str]) -> dict[str, Any]:
        metrics = super().sample_metrics(samples, train_texts)
        finite = sum(s is not None and self.canonical(s) is not None and is_finite_on_grid(s) for s in samples)
        metrics["finite"] = finite / max(len(samples), 1)
        return metrics

    def render(self, samples: list[str | None], path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = [s for s in samples if s is not None and self.canonical(s) is not None][:12]
        fig, axes = plt.subplots(3, 4, figsize=(12, 7), squeeze=False)
        for ax, text in zip(axes.flat, shown + [None] * (12 - len(shown))):
            ax.set_xticks([]), ax.set_yticks([])
            if text is None:
                ax.axis("off")
                continue
            try:
                y = evaluate(text, GRID)
            except ExpressionError:
                continue
            ax.plot(GRID, np.where(np.isfinite(y), np.clip(y, -1e3, 1e3), np.nan), lw=1.2)
            ax.set_title(text if len(text) < 40 else text[:37] + "...", fontsize=8)
        fig.suptitle("sampled expressions on [-10, 10]")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


DOMAINS.register("expressions", ExpressionDomain())
