"""Expression data sets: arithmetic expressions of the Grammar VAE paper.

``load_expressions(source, n, seed, grammar)`` returns an :class:`ExpressionData`
(distinct expressions in the grammar's canonical spelling, ``unparse(parse(x))``,
plus a :class:`~discrete_rae.data.errors.LoadReport`).

Sources:

* ``"generated"``: ``n`` distinct expressions sampled from the grammar (default: the
  built-in ``expressions`` grammar) with the seed, each a complete derivation of at
  most ``max_rules`` (14) production rules.
* a path: one expression per line, tokens separated by whitespace or not at all
  (``sin(x)+3*x``). Lines the grammar rejects are counted by reason with examples;
  duplicates (after normalisation) are dropped. With ``n`` below the number of
  lines a seeded random subset is drawn (the first ``n`` distinct valid lines in a
  random order), otherwise the file order is kept.

How expressions are generated (``profile``)
-------------------------------------------
The paper's 100,000 expressions (``equation2_15_dataset.txt``) use 8, 10, 12 or 14
rules (every derivation of this grammar has an even length), in proportions
0.6% / 3.7% / 28.1% / 67.5% (:data:`PAPER_LENGTH_PROFILE`). Drawing every rule
uniformly among the alternatives of its non-terminal (``profile="rules"``,
:meth:`Grammar.random_derivation`) gives mostly short expressions: among 100,000
distinct draws about 34% have 10 rules and only about 21% have 14 (measured, see
``datasets/README.md``); no per-rule weighting fixes this, because long derivations
are the ones that overflow the 14-rule limit and get rejected. So the default
sampler weights every rule choice by the number of complete derivations it leaves
open: it first draws the derivation length ``L`` from a profile, then a derivation
uniformly among all derivations with exactly ``L`` rules (counted by dynamic
programming over the grammar). Profiles:

* ``"paper"`` (default when ``max_rules`` is 14): :data:`PAPER_LENGTH_PROFILE`.
* ``"uniform"``: ``L`` weighted by the number of derivations of that length, i.e.
  every derivation of at most ``max_rules`` rules equally likely (95% have 14).
* ``"rules"``: uniform rule choices, derivations over ``max_rules`` rejected.
* a mapping ``{length: weight}``.

Within a length the paper's set is not uniform (it over-represents ``+``: 69% of its
binary operators against 33% here), which is a property of how those expressions were
enumerated, not of the grammar; see ``datasets/README.md``.
"""

from __future__ import annotations

import bisect
import io
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import DataError, LoadReport
from .molecule_sources import _sha256_file, default_data_dir
from .records import MAX_LINE_CHARS, _open_binary

logger = logging.getLogger(__name__)

__all__ = [
    "ExpressionData",
    "load_expressions",
    "generate_expressions",
    "DerivationSampler",
    "PAPER_LENGTH_PROFILE",
    "DEFAULT_MAX_RULES",
]

#: Most rules in a generated expression (the paper: "at most 15" including the padding step).
DEFAULT_MAX_RULES = 14

#: Derivation lengths of the paper's 100,000 expressions (counted in
#: ``equation2_15_dataset.txt`` with the built-in grammar; the file's sha256 is in
#: ``datasets/manifest.json``).
PAPER_LENGTH_PROFILE: dict[int, int] = {8: 624, 10: 3748, 12: 28092, 14: 67536}


@dataclass
class ExpressionData:
    """Loaded expressions.

    Attributes:
        expressions: distinct expressions in the grammar's canonical spelling.
        report: what was read / drawn, kept and rejected, with the histogram of
            derivation lengths in ``report.lengths``.
    """

    expressions: list[str]
    report: LoadReport = field(repr=False)

    @property
    def texts(self) -> list[str]:
        """Alias of :attr:`expressions`."""
        return self.expressions

    def __len__(self) -> int:
        return len(self.expressions)


# --------------------------------------------------------------------------------------
# Counting and sampling derivations of a given length
# --------------------------------------------------------------------------------------


def _cumulative(weighted: Iterable[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Running totals of the non-zero weights and their values, for inverse-CDF picks."""
    cum, vals, total = [], [], 0
    for value, weight in weighted:
        if weight:
            total += weight
            cum.append(total)
            vals.append(value)
    return cum, vals


class DerivationSampler:
    """Uniform sampling of leftmost derivations with an exact number of rules.

    ``count(L)`` is the number of complete derivations from the start symbol that
    use exactly ``L`` rules (padding excluded); ``sample(rng, L)`` returns one of them
    uniformly (rule indices in leftmost-derivation order, as :meth:`Grammar.parse`
    returns them). Counts are exact Python integers, computed once for lengths up to
    ``max_rules`` by dynamic programming over the grammar's productions (any
    grammar; rules using a symbol without productions are never drawn).

    Args:
        grammar: a :class:`~discrete_rae.grammar.Grammar` (only ``productions``,
            ``pad_index`` and ``start`` are used).
        max_rules: longest derivation to count.
    """

    def __init__(self, grammar: Any, max_rules: int) -> None:
        self.max_rules = int(max_rules)
        if self.max_rules < 1:
            raise ValueError("max_rules must be >= 1")
        K = self.max_rules
        rules_of: dict[str, list[int]] = {}
        rhs: dict[int, list[str]] = {}
        for r, p in enumerate(grammar.productions):
            if r == grammar.pad_index:
                continue
            rules_of.setdefault(p.lhs().symbol(), []).append(r)
            rhs[r] = [s.symbol() for s in p.rhs() if not isinstance(s, str)]
        self._rules_of = rules_of
        self._rhs = rhs
        self.start = grammar.start
        zero = [0] * (K + 1)
        counts: dict[str, list[int]] = {a: list(zero) for a in rules_of}
        # suffix[r][i][j]: ways for rhs[r][i:] to use exactly j rules in all
        suffix: dict[int, list[list[int]]] = {}
        for r, kids in rhs.items():
            table = [[0] * (K + 1) for _ in range(len(kids) + 1)]
            table[len(kids)][0] = 1
            suffix[r] = table
        for k in range(1, K + 1):
            j = k - 1
            for r, kids in rhs.items():
                table = suffix[r]
                for i in range(len(kids) - 1, -1, -1):
                    ck = counts.get(kids[i], zero)
                    nxt = table[i + 1]
                    table[i][j] = sum(ck[k1] * nxt[j - k1] for k1 in range(1, j + 1))
            for a, rules in rules_of.items():
                counts[a][k] = sum(suffix[r][0][j] for r in rules)
        self._counts = counts
        self._zero = zero
        self._suffix = suffix
        self._rule_cum: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        self._split_cum: dict[tuple[int, int, int], tuple[list[int], list[int]]] = {}

    def count(self, length: int) -> int:
        """Number of complete derivations with exactly ``length`` rules."""
        if not 0 < length <= self.max_rules:
            return 0
        return self._counts.get(self.start, self._zero)[length]

    def counts(self) -> dict[int, int]:
        """``{length: count}`` for every length from 1 to ``max_rules`` with a derivation."""
        return {k: self.count(k) for k in range(1, self.max_rules + 1) if self.count(k)}

    @staticmethod
    def _pick(rng: random.Random, cum: list[int], values: list[int]) -> int:
        return values[bisect.bisect_right(cum, rng.randrange(cum[-1]))]

    def _choose_rule(self, rng: random.Random, a: str, k: int) -> int:
        key = (a, k)
        entry = self._rule_cum.get(key)
        if entry is None:
            weighted = ((r, self._suffix[r][0][k - 1]) for r in self._rules_of[a])
            entry = self._rule_cum[key] = _cumulative(weighted)
        return self._pick(rng, *entry)

    def _choose_split(self, rng: random.Random, r: int, i: int, j: int) -> int:
        key = (r, i, j)
        entry = self._split_cum.get(key)
        if entry is None:
            ck = self._counts.get(self._rhs[r][i], self._zero)
            nxt = self._suffix[r][i + 1]
            weighted = ((k1, ck[k1] * nxt[j - k1]) for k1 in range(1, j + 1))
            entry = self._split_cum[key] = _cumulative(weighted)
        return self._pick(rng, *entry)

    def _expand(self, rng: random.Random, a: str, k: int, out: list[int]) -> None:
        r = self._choose_rule(rng, a, k)
        out.append(r)
        kids = self._rhs[r]
        j = k - 1
        last = len(kids) - 1
        for i, b in enumerate(kids):
            k1 = j if i == last else self._choose_split(rng, r, i, j)
            self._expand(rng, b, k1, out)
            j -= k1

    def sample(self, rng: random.Random, length: int) -> list[int]:
        """A derivation with exactly ``length`` rules, uniformly among all such derivations."""
        if self.count(length) == 0:
            raise ValueError(f"no derivation has exactly {length} rules")
        out: list[int] = []
        self._expand(rng, self.start, length, out)
        return out


def _profile_weights(
    profile: str | Mapping[int, float] | None, sampler: DerivationSampler
) -> tuple[str, dict[int, float]]:
    """Resolve a profile spec into (name, {length: weight}) over lengths that exist."""
    available = sampler.counts()
    if profile is None:
        profile = "paper" if sampler.max_rules == DEFAULT_MAX_RULES else "uniform"
    if isinstance(profile, str):
        if profile == "paper":
            raw: Mapping[int, float] = PAPER_LENGTH_PROFILE
        elif profile == "uniform":
            raw = available
        else:
            raise ValueError(f"unknown length profile {profile!r}; use 'paper', 'uniform', 'rules' or a mapping")
        name = profile
    else:
        raw, name = profile, "custom"
    weights = {int(k): float(v) for k, v in raw.items() if v > 0 and available.get(int(k), 0) > 0}
    if not weights:
        raise ValueError(f"length profile {name!r} has no length with a derivation of at most {sampler.max_rules} rules")
    return name, weights


def generate_expressions(
    grammar: Any,
    n: int,
    seed: int = 0,
    max_rules: int = DEFAULT_MAX_RULES,
    profile: str | Mapping[int, float] | None = None,
) -> ExpressionData:
    """``n`` distinct random expressions of at most ``max_rules`` rules (see module docstring).

    Args:
        grammar: the expression grammar.
        n: number of distinct expressions.
        seed: seed of ``random.Random`` (results are identical for equal seeds).
        max_rules: most rules per derivation.
        profile: ``"paper"``, ``"uniform"``, ``"rules"``, a ``{length: weight}``
            mapping, or None (``"paper"`` for ``max_rules == 14``, else ``"uniform"``).

    Raises:
        DataError: fewer than ``n`` distinct expressions can be drawn.
    """
    if n <= 0:
        raise DataError(f"generated: n must be positive, got {n}")
    rng = random.Random(seed)
    report = LoadReport(source="generated")
    sampler = DerivationSampler(grammar, max_rules)
    seen: set[str] = set()
    kept: list[str] = []
    lengths: Counter = Counter()
    max_draws = 50 * n + 10_000
    if profile == "rules":
        capacity = sum(sampler.counts().values())
        report.notes.append(f"uniform rule choices, derivations over {max_rules} rules rejected, seed {seed}")

        def draw() -> list[int] | None:
            return grammar.random_derivation(rng, max_length=max_rules)

    else:
        name, weights = _profile_weights(profile, sampler)
        capacity = sum(sampler.count(k) for k in weights)
        lens = sorted(weights)
        cum = np.cumsum([weights[k] for k in lens]).tolist()
        report.notes.append(
            f"length profile {name!r} over {dict((k, round(weights[k] / cum[-1], 4)) for k in lens)}, "
            f"then uniform among derivations of that length, seed {seed}"
        )

        def draw() -> list[int] | None:
            length = lens[bisect.bisect_right(cum, rng.random() * cum[-1])]
            return sampler.sample(rng, length)

    if n > capacity:
        raise DataError(
            f"generated: {n:,} distinct expressions requested but only {capacity:,} derivations of at most "
            f"{max_rules} rules exist for this grammar and profile"
        )
    draws = 0
    while len(kept) < n:
        if draws >= max_draws:
            raise DataError(
                f"generated: only {len(kept):,} distinct expressions after {draws:,} draws ({n:,} requested); "
                "use a smaller n, a larger max_rules or another profile"
            )
        draws += 1
        ids = draw()
        if ids is None:
            report.rejected["too_long"] += 1
            continue
        text = grammar.unparse(ids)
        if text in seen:
            report.duplicates += 1
            continue
        seen.add(text)
        kept.append(text)
        lengths[len(ids)] += 1
    report.records = report.examined = draws
    report.kept = len(kept)
    report.lengths = dict(sorted(lengths.items()))
    return ExpressionData(kept, report)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _reason(message: str) -> str:
    if "is not a token" in message:
        return "unknown_token"
    if "longer than max_length" in message:
        return "too_many_rules"
    if "no parse" in message:
        return "no_parse"
    return "grammar"


def _read_expression_file(
    path: Path, label: str, grammar: Any, n: int | None, seed: int, report: LoadReport
) -> list[str]:
    from ..grammar import GrammarError

    raw = _open_binary(path, label)
    texts: list[str] = []
    where: list[int] = []
    try:
        with io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    report.blank += 1
                    continue
                report.records += 1
                if len(line) > MAX_LINE_CHARS:
                    report.reject("too_long", f"line {lineno}", line)
                    continue
                texts.append(line)
                where.append(lineno)
    except (OSError, EOFError) as exc:
        raise DataError(f"{label}: cannot read the file ({exc})") from None
    if report.records == 0:
        raise DataError(f"{label}: the file is empty (only blank lines)")
    subset = n is not None and n < report.records
    order: Any = np.random.default_rng(seed).permutation(len(texts)) if subset else range(len(texts))
    if subset:
        report.notes.append(f"random subset: lines visited in an order drawn with seed {seed}")
    kept: list[str] = []
    seen: set[str] = set()
    lengths: Counter = Counter()
    for i in order:
        i = int(i)
        report.examined += 1
        try:
            ids = grammar.parse(texts[i])
            text = grammar.unparse(ids)
        except GrammarError as exc:
            report.reject(_reason(str(exc)), f"line {where[i]}", texts[i])
            continue
        if text in seen:
            report.duplicates += 1
            continue
        seen.add(text)
        kept.append(text)
        lengths[len(ids)] += 1
        if subset and len(kept) >= n:  # type: ignore[operator]
            break
    report.kept = len(kept)
    report.lengths = dict(sorted(lengths.items()))
    return kept


def load_expressions(
    source: str = "generated",
    n: int | None = 100_000,
    seed: int = 0,
    grammar: Any = None,
    max_rules: int = DEFAULT_MAX_RULES,
    profile: str | Mapping[int, float] | None = None,
    data_dir: Path | None = None,
) -> ExpressionData:
    """Generated or file-based expressions, canonicalised by the grammar and deduplicated.

    Args:
        source: ``"generated"`` or a path to a file with one expression per line
            (relative paths are also looked up in ``data_dir``).
        n: number of expressions (required for ``"generated"``; for a file, None
            or at least the number of lines = all of them in file order).
        seed: random seed (generation / subset).
        grammar: a :class:`~discrete_rae.grammar.Grammar`; default the built-in
            ``expressions`` grammar.
        max_rules: longest generated derivation (ignored for files, whose limit is
            the grammar's ``max_length``).
        profile: derivation-length profile of generated expressions (see the
            module docstring).
        data_dir: data directory used to resolve relative file names.

    Raises:
        DataError: missing / empty / binary file, no valid line, impossible ``n``.
    """
    if grammar is None:
        from ..grammar import Grammar

        grammar = Grammar.builtin("expressions")
    if str(source).strip().lower() == "generated":
        if n is None:
            raise DataError("generated: n (the number of expressions) is required")
        data = generate_expressions(grammar, n, seed=seed, max_rules=max_rules, profile=profile)
        logger.info("generated: %s", data.report.counts_line())
        return data
    if n is not None and n <= 0:
        raise DataError(f"{source}: n must be positive, got {n}")
    path = Path(str(source)).expanduser()
    if not path.exists() and not path.is_absolute():
        alt = Path(data_dir or default_data_dir()) / str(source)
        if alt.exists():
            path = alt
    if not path.exists():
        raise DataError(f"{source}: no such file, and not a known expression source (known: generated)")
    if path.is_dir():
        raise DataError(f"{source}: is a directory, expected a text file with one expression per line")
    label = str(path)
    report = LoadReport(source=label, path=label, sha256=_sha256_file(path))
    kept = _read_expression_file(path, label, grammar, n, seed, report)
    if not kept:
        examples = "; ".join(f"{r}: {ex[0]}" for r, ex in report.examples.items() if ex)
        raise DataError(f"{label}: no line is an expression of grammar {grammar.name} ({report.counts_line()}; e.g. {examples})")
    if n is not None and len(kept) < n and n < report.records:
        logger.warning("%s: only %d distinct valid expressions, fewer than the %d requested", label, len(kept), n)
    logger.info("%s: %s", label, report.counts_line())
    return ExpressionData(kept, report)
