"""Context-free grammars for grammar-based autoencoders (Grammar VAE style).

A string is represented by the production rules of its leftmost derivation (the
pre-order of its parse tree). This module provides:

* :class:`Grammar` -- loads an nltk-format CFG (``Grammar.builtin("smiles")``,
  ``Grammar.from_file(path)``, ``Grammar.from_string(text)``), tokenizes, parses
  strings into rule-index sequences, turns sequences back into strings and
  samples random derivations.
* Fast parsing: at first use an LALR(1) automaton is built from the grammar (any
  CFG, no grammar-specific code). Inputs are parsed with that table; where the
  table has conflicts (e.g. the SMILES grammar needs two tokens of look-ahead after
  an atom followed by a bond symbol) the parser forks the stack for each action
  and keeps the forks that survive (a generalised LR parse). Each input has one
  parse tree when the grammar is unambiguous, which is then exactly the tree
  ``nltk.ChartParser`` returns. If an input turns out to have several parses, or
  the grammar is cyclic, the input is handed to ``nltk.ChartParser`` (logged
  warning) so the result is always identical to
  ``next(nltk.ChartParser(cfg).parse(tokens)).productions()``.
* Batched masked decoding in torch (:class:`DecodeState`,
  :meth:`Grammar.decode_logits`, :func:`select`): one stack of pending
  non-terminals per sample, held in tensors, every step a handful of tensor ops
  over the whole batch.

Length limit and unfinished samples
-----------------------------------
A derivation may use at most ``max_length`` rules. ``parse`` raises
:class:`GrammarError` for longer ones. During decoding a sample is *cut* as soon
as the number of pending non-terminals exceeds the number of remaining steps
(each pending non-terminal needs at least one more rule, so it can no longer
finish); from then on only the padding rule is allowed for it and it is reported
with ``finished == False``. Cutting never changes a sample that could still
finish. ``unparse_many`` returns ``None`` for rows whose derivation is not
complete: a half-derived string is never returned.

Grammar file header
-------------------
Comment lines of the form ``# key: value`` set options: ``max_length`` (int),
``joiner`` (JSON string put between tokens by ``unparse``; default ``""``),
``skip_whitespace`` (``true``/``false``; default true when the joiner is
non-empty whitespace), ``name``. Lines whose first non-blank character is ``#``
are comments. The padding rule is the production whose left-hand side is
``Nothing`` (conventionally ``Nothing -> None``, the last rule); one is appended
when the file has none. Quoted terminals are read literally by nltk (no escape
processing): the SMILES backslash bond is written ``'\\'`` with ONE backslash
between the quotes in the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import multiprocessing
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import nltk
import numpy as np
import torch
from nltk.grammar import Nonterminal, Production

logger = logging.getLogger(__name__)

__all__ = [
    "GrammarError",
    "Grammar",
    "ParseResult",
    "DecodeState",
    "DecodeResult",
    "select",
    "PAD_LHS",
]

#: Left-hand side of the padding (no-op) rule.
PAD_LHS = "Nothing"

_HEADER_RE = re.compile(r"^\s*#\s*(max_length|joiner|skip_whitespace|name)\s*:\s*(.*?)\s*$")
_EOF = None  # end-of-input token key in the LR action table
_EMPTY: tuple = ()  # value of a shifted terminal on the LR value stack
_MAX_STACKS = 64  # generalised LR: more live stacks than this -> chart parser
_MAX_FORKS = 20_000  # generalised LR: more forks than this for one input -> chart parser
_MAX_FORKS_PER_TOKEN = 256  # ... or more than this while reading one token
_FIRST_TIER = 4  # greedy CPU decoding: candidates read for every row before the rest
_INF = 10**12  # "no finite derivation" in minimal-length computations


from .errors import GrammarError  # noqa: E402,F401  (defined with the other user errors; re-exported)


def _short(text: str, limit: int = 120) -> str:
    """Repr of ``text`` cut to about ``limit`` characters for error messages."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --------------------------------------------------------------------------------------
# Result containers
# --------------------------------------------------------------------------------------


@dataclass
class ParseResult:
    """Outcome of :meth:`Grammar.parse_many`.

    Attributes:
        ids: flat concatenation of the rule sequences of the inputs that parsed,
            shape ``[sum(lengths)]``; ``uint8`` when the grammar has at most 256
            rules, else ``int16``/``int32``. Use :meth:`padded` or :meth:`sequence`.
        lengths: ``int32`` array ``[n_ok]``, number of rules of each parsed input.
        ok_index: ``int64`` array ``[n_ok]``, positions (in the input list) of the
            inputs that parsed, in increasing order; row ``k`` of :meth:`padded`
            belongs to input ``ok_index[k]``.
        failures: ``(index, text, reason)`` for every input that did not parse.
        pad_index: index of the padding rule (fill value of :meth:`padded`).
        n_inputs: number of inputs.
    """

    ids: np.ndarray
    lengths: np.ndarray
    ok_index: np.ndarray
    failures: list[tuple[int, str, str]]
    pad_index: int
    n_inputs: int
    offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])

    def __len__(self) -> int:
        """Number of inputs that parsed."""
        return int(len(self.lengths))

    def sequence(self, k: int) -> np.ndarray:
        """Rule sequence of the ``k``-th parsed input, shape ``[lengths[k]]``."""
        return self.ids[self.offsets[k] : self.offsets[k + 1]]

    def padded(self, max_length: int | None = None) -> np.ndarray:
        """Padded matrix ``[n_ok, max_length]`` (dtype of ``ids``) filled with ``pad_index``.

        ``max_length`` defaults to the longest sequence; it must not be shorter.
        """
        longest = int(self.lengths.max()) if len(self.lengths) else 0
        width = longest if max_length is None else int(max_length)
        if width < longest:
            raise ValueError(f"max_length {width} < longest parsed sequence {longest}")
        out = np.full((len(self.lengths), width), self.pad_index, dtype=self.ids.dtype)
        if len(self.lengths):
            col = np.arange(width)[None, :]
            mask = col < self.lengths[:, None]
            out[mask] = self.ids
        return out


@dataclass
class DecodeResult:
    """Outcome of :meth:`Grammar.decode_logits`.

    Attributes:
        ids: LongTensor ``[B, L]`` of chosen rules, padded with the pad rule.
        lengths: LongTensor ``[B]``, number of non-padding rules chosen.
        finished: BoolTensor ``[B]``, True where the derivation completed (stack
            emptied) within ``L`` steps. Unfinished rows are not valid strings.
    """

    ids: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor


# --------------------------------------------------------------------------------------
# Selection helper
# --------------------------------------------------------------------------------------


def select(
    logits: torch.Tensor,
    allowed: torch.Tensor,
    greedy: bool = True,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one rule per row among the allowed ones.

    Computation is in float32 and never yields NaN or a forbidden rule: ``+inf``
    becomes the largest and ``-inf`` the lowest finite float32, NaN ranks below
    every number. Greedy ties go to the first (lowest-index) allowed rule; a row
    whose allowed logits are all NaN picks its first allowed rule (greedy) or
    uniformly among its allowed rules (sampling).

    Args:
        logits: ``[B, R]`` scores.
        allowed: ``[B, R]`` bool, at least one True per row.
        greedy: argmax if True, else a categorical sample of ``softmax(logits / T)``.
        temperature: ``T > 0``, used only when sampling.
        generator: optional torch generator for sampling.

    Returns:
        LongTensor ``[B]`` of rule indices (always allowed ones).
    """
    if logits.shape != allowed.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and allowed {tuple(allowed.shape)} differ")
    x = torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
    x = x.masked_fill(~allowed, float("-inf"))
    row_max = x.amax(dim=-1, keepdim=True)
    hopeless = torch.isneginf(row_max)  # every allowed logit is NaN (no host sync here)
    x = torch.where(hopeless & allowed, torch.zeros_like(x), x)
    row_max = row_max.masked_fill(hopeless, 0.0)
    if greedy:
        return x.argmax(dim=-1)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = torch.softmax((x - row_max) / float(temperature), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------------------
# Batched decoding state
# --------------------------------------------------------------------------------------


class DecodeState:
    """Stacks of pending non-terminals for a batch, held in tensors.

    Usage for an autoregressive decoder::

        state = grammar.decoder_state(B)
        while not state.complete:
            logits = model_step(...)                  # [B, R]
            rule = select(logits, state.allowed())    # [B]
            state.push(rule)
        strings = grammar.unparse_many(state.ids, state.lengths)

    Tensors: ``stack`` int16 tensor ``[B, S]`` of non-terminal indices whose slot 0
    permanently holds ``Nothing`` (so an empty stack shows ``Nothing`` on top);
    ``ptr`` LongTensor ``[B]``, position of the top element (0: empty); ``cut``
    BoolTensor ``[B]``, the sample was stopped because it could no longer finish
    (its stack is then cleared, see the module docstring). Every step is a fixed
    number of tensor ops over the whole batch, with no per-sample Python loop.
    """

    def __init__(
        self,
        grammar: "Grammar",
        batch_size: int,
        device: torch.device | str | None = None,
        max_length: int | None = None,
        length_mask: bool = False,
    ) -> None:
        self.grammar = grammar
        self.length_mask = bool(length_mask)
        self.max_length = int(grammar.max_length if max_length is None else max_length)
        if self.max_length < 1:
            raise ValueError("max_length must be >= 1")
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.device = device
        B = int(batch_size)
        self.batch_size = B
        t = grammar._decode_tensors(device)
        self._masks = t["masks"]
        self._rhs = t["rhs16"]  # [R, K] RHS non-terminals in push order (reversed), padded
        self._rhs_len = t["rhs_len"]  # [R]
        K = self._rhs.shape[1]
        # unfinished-but-alive samples keep ptr <= remaining steps <= max_length, and a
        # push writes K slots above the popped top: max_length + K + 1 slots suffice
        self.stack = torch.full((B, self.max_length + K + 2), grammar._nothing_nt, dtype=torch.int16, device=device)
        self.stack[:, 1] = grammar._start_nt
        self.ptr = torch.ones(B, dtype=torch.long, device=device)
        self.cut = torch.zeros(B, dtype=torch.bool, device=device)
        self._ids = torch.full((B, self.max_length), grammar.pad_index, dtype=torch.long, device=device)
        self._offsets = torch.arange(1, K + 1, device=device).unsqueeze(0)  # [1, K]
        self.t = 0
        # length mask: `need` = fewest rules that finish every pending non-terminal
        self._nt_min, self._rhs_min = t["nt_min"], t["rhs_min"]
        self.need = torch.full((B,), int(self._nt_min[grammar._start_nt]), dtype=torch.long, device=device)

    @property
    def done(self) -> torch.Tensor:
        """BoolTensor ``[B]``: the derivation is complete (stack emptied within the limit)."""
        return (self.ptr == 0) & ~self.cut

    @property
    def finished(self) -> torch.Tensor:
        """BoolTensor ``[B]``: same as :attr:`done`."""
        return self.done

    @property
    def active(self) -> torch.Tensor:
        """BoolTensor ``[B]``: the sample still has pending non-terminals (neither done nor cut)."""
        return self.ptr > 0

    @property
    def complete(self) -> bool:
        """True when no sample can change any more (all done or cut, or no steps left)."""
        return self.t >= self.max_length or not bool((self.ptr > 0).any())

    @property
    def ids(self) -> torch.Tensor:
        """LongTensor ``[B, t]`` of the rules chosen so far (pad rule once done or cut)."""
        return self._ids[:, : self.t]

    @property
    def lengths(self) -> torch.Tensor:
        """LongTensor ``[B]``: number of non-padding rules chosen so far."""
        return (self.ids != self.grammar.pad_index).count_nonzero(dim=1)

    def top(self) -> torch.Tensor:
        """LongTensor ``[B]``: non-terminal on top of each stack (``Nothing`` when done or cut)."""
        return self.stack.gather(1, self.ptr.unsqueeze(1)).squeeze(1).long()

    def allowed(self) -> torch.Tensor:
        """BoolTensor ``[B, R]``: rules allowed at this step (only the pad rule when done or cut).

        With ``length_mask`` a rule is allowed only if the derivation can still finish in the
        steps left after it: need - min_len(top) + sum(min_len(rhs)) <= max_length - t - 1.
        The cheapest rule of the top symbol always passes (need only shrinks by one per step),
        so every decode finishes; without it (the Grammar VAE's protocol) decodes that run out
        of steps are cut and count as invalid.
        """
        # index_select, not advanced indexing: the latter is far slower on CPU here
        top = self.top()
        masks = self._masks.index_select(0, top)
        if not self.length_mask:
            return masks
        after = (self.need - self._nt_min.index_select(0, top)).unsqueeze(1) + self._rhs_min.unsqueeze(0)
        fits = after <= self.max_length - self.t - 1
        return masks & (fits | (top == self.grammar._nothing_nt).unsqueeze(1))

    # Minimal version added with beam search (covers the fields above); a fuller one that also
    # covers later constraints may replace it.
    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (LongTensor ``[B']``, repeats allowed): row i becomes old row index[i].

        Beam search calls it to carry each surviving beam's stack, length budget and rules.
        """
        index = index.to(device=self.device, dtype=torch.long)
        self.stack = self.stack.index_select(0, index)
        self.ptr = self.ptr.index_select(0, index)
        self.cut = self.cut.index_select(0, index)
        self._ids = self._ids.index_select(0, index)
        self.need = self.need.index_select(0, index)
        self.batch_size = int(index.shape[0])

    def push(self, rule_ids: torch.Tensor, check: bool = True) -> None:
        """Apply one rule per sample: pop the top non-terminal, push the rule's RHS non-terminals.

        Args:
            rule_ids: LongTensor ``[B]``; for done or cut samples it must be the pad rule.
            check: verify that every rule is allowed (raises ``ValueError``; one host sync).
        """
        if self.t >= self.max_length:
            raise ValueError(f"decoding already used all {self.max_length} steps")
        rule = rule_ids.to(device=self.device, dtype=torch.long).reshape(-1)
        if rule.shape[0] != self.batch_size:
            raise ValueError(f"expected {self.batch_size} rules, got {rule.shape[0]}")
        top = self.top()
        if check:
            ok = self._masks.index_select(0, top).gather(1, rule.unsqueeze(1)).squeeze(1)
            if not bool(ok.all()):
                bad = int((~ok).nonzero()[0, 0])
                raise ValueError(f"rule {int(rule[bad])} is not allowed for sample {bad} at step {self.t}")
        if self.length_mask:  # only the length mask reads `need`
            self.need += self._rhs_min.index_select(0, rule) - self._nt_min.index_select(0, top)
        # pop (empty stacks stay empty: the pad rule pushes nothing)
        ptr = (self.ptr - 1).clamp_(min=0)
        # write all K slots above the new top; slots past the rule's RHS are never read
        self.stack.scatter_(1, ptr.unsqueeze(1) + self._offsets, self._rhs.index_select(0, rule))
        ptr += self._rhs_len.index_select(0, rule)
        self._ids[:, self.t] = rule
        self.t += 1
        # a sample with more pending non-terminals than steps left can never finish
        newly_cut = ptr > (self.max_length - self.t)
        self.cut |= newly_cut
        self.ptr = ptr.masked_fill_(newly_cut, 0)


# --------------------------------------------------------------------------------------
# Worker-process helpers for parse_many
# --------------------------------------------------------------------------------------

_WORKER_GRAMMAR: "Grammar | None" = None


def _worker_init(state: dict[str, Any]) -> None:
    global _WORKER_GRAMMAR
    _WORKER_GRAMMAR = Grammar.from_state_dict(state)


def _worker_parse(args: tuple[int, list[str]]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, list]:
    start, texts = args
    assert _WORKER_GRAMMAR is not None
    return (start,) + _WORKER_GRAMMAR._parse_chunk(texts, start)


# --------------------------------------------------------------------------------------
# Grammar
# --------------------------------------------------------------------------------------


class Grammar:
    """A context-free grammar with rule-sequence encoding, fast parsing and batched decoding.

    Attributes:
        name: grammar name (file stem, header ``name`` or constructor argument).
        text: the CFG source text (for checkpoints).
        hash: sha256 hex digest of the normalised grammar (the productions, one
            per line, in order); comments and layout do not change it.
        cfg: the ``nltk.CFG``.
        productions: list of ``nltk.Production``, index = rule index (order of
            ``nltk.CFG.fromstring``).
        n_rules: number of productions (including the padding rule).
        start: start symbol name.
        max_length: longest allowed rule sequence.
        joiner: string put between tokens by :meth:`unparse`.
        nonterminals: left-hand-side names in order of first appearance (includes ``Nothing``).
        terminals: terminal strings in order of first appearance.
        masks: BoolTensor ``[n_nonterminals, n_rules]``, ``masks[a, r]`` true when rule
            ``r`` may expand non-terminal ``a``.
        lhs: LongTensor ``[n_rules]``, non-terminal index of each rule's left-hand side.
        pad_index: index of the padding rule (left-hand side ``Nothing``).
    """

    def __init__(
        self,
        text: str,
        max_length: int | None = None,
        name: str | None = None,
        joiner: str | None = None,
        skip_whitespace: bool | None = None,
    ) -> None:
        self.text = text
        header = self._read_header(text)
        self.name = name or header.get("name") or "grammar"
        ml = max_length if max_length is not None else header.get("max_length")
        if ml is None:
            raise GrammarError(f"grammar {self.name}: no max_length given and no '# max_length: N' header")
        self.max_length = int(ml)
        if self.max_length < 1:
            raise GrammarError(f"grammar {self.name}: max_length must be >= 1")
        self.joiner = joiner if joiner is not None else header.get("joiner", "")
        if skip_whitespace is None:
            skip_whitespace = header.get("skip_whitespace")
        if skip_whitespace is None:
            skip_whitespace = self.joiner != "" and self.joiner.strip() == ""
        self.skip_whitespace = bool(skip_whitespace)

        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        try:
            cfg = nltk.CFG.fromstring(body)
        except ValueError as exc:
            raise GrammarError(f"grammar {self.name}: cannot read CFG: {exc}") from exc
        productions = list(cfg.productions())
        pads = [i for i, p in enumerate(productions) if p.lhs().symbol() == PAD_LHS]
        if not pads:
            logger.warning("grammar %s has no padding rule; appending '%s -> None'", self.name, PAD_LHS)
            productions.append(Production(Nonterminal(PAD_LHS), [Nonterminal("None")]))
            pads = [len(productions) - 1]
        if len(pads) > 1:
            raise GrammarError(f"grammar {self.name}: {len(pads)} rules with left-hand side {PAD_LHS}, expected 1")
        self.pad_index = pads[0]
        if self.pad_index != len(productions) - 1:
            logger.warning("grammar %s: the padding rule is not the last production", self.name)
        if cfg.start().symbol() == PAD_LHS:
            raise GrammarError(f"grammar {self.name}: the start symbol must not be {PAD_LHS}")
        self.cfg = nltk.CFG(cfg.start(), productions)
        self.productions: list[Production] = productions
        self.n_rules = len(productions)
        self.start = cfg.start().symbol()
        self._prod_index: dict[Production, int] = {}
        for i, p in enumerate(productions):
            self._prod_index.setdefault(p, i)  # first occurrence, as list.index

        nts: list[str] = []
        for p in productions:
            if p.lhs().symbol() not in nts:
                nts.append(p.lhs().symbol())
        self.nonterminals = nts
        if len(nts) > 32767:
            raise GrammarError(f"grammar {self.name}: more than 32767 non-terminals")
        self._nt_index = {s: i for i, s in enumerate(nts)}
        terms: list[str] = []
        seen: set[str] = set()
        for p in productions:
            for s in p.rhs():
                if isinstance(s, str) and s not in seen:
                    seen.add(s)
                    terms.append(s)
        if "" in seen:
            raise GrammarError(f"grammar {self.name}: empty terminal ''")
        self.terminals = terms
        self._terminal_set = frozenset(terms)

        self.lhs = torch.tensor([self._nt_index[p.lhs().symbol()] for p in productions], dtype=torch.long)
        # RHS non-terminal indices (left to right); -1 marks a symbol without productions
        self._rhs_nts: list[list[int]] = []
        for i, p in enumerate(productions):
            if i == self.pad_index:
                self._rhs_nts.append([])  # the padding rule pushes nothing
            else:
                self._rhs_nts.append(
                    [self._nt_index.get(s.symbol(), -1) for s in p.rhs() if isinstance(s, Nonterminal)]
                )
        self._nothing_nt = self._nt_index[PAD_LHS]
        self._start_nt = self._nt_index[self.start]
        # rules that can never complete (they use a symbol without productions, or one
        # that derives no finite string) are never allowed
        self._min_len = self._minimal_lengths()
        self._usable = [
            i == self.pad_index or all(a >= 0 and self._min_len[a] < _INF for a in self._rhs_nts[i])
            for i in range(self.n_rules)
        ]
        for i, ok in enumerate(self._usable):
            if not ok:
                self._rhs_nts[i] = []
                logger.warning(
                    "grammar %s: rule %d (%s) can never complete (undefined or unproductive symbol); "
                    "it is never allowed",
                    self.name, i, productions[i],
                )
        self._min_len_start = self._min_len[self._start_nt]
        if self._min_len_start >= _INF:
            raise GrammarError(f"grammar {self.name}: the start symbol derives no finite string")
        masks = torch.zeros(len(nts), self.n_rules, dtype=torch.bool)
        for i in range(self.n_rules):
            if self._usable[i]:
                masks[self.lhs[i], i] = True
        self.masks = masks
        normalised = "\n".join(str(p) for p in productions)
        self.hash = hashlib.sha256(normalised.encode("utf-8")).hexdigest()

        alts = sorted(self._terminal_set, key=lambda s: (-len(s), s))
        alt = "|".join(re.escape(s) for s in alts)
        prefix = r"\s*" if self.skip_whitespace else ""
        self._token_re = re.compile(prefix + "(" + alt + "|.)", re.DOTALL)
        # unparse table: for each rule the RHS reversed, terminals as str, non-terminals as int
        self._unparse_rhs: list[tuple] = []
        for i, p in enumerate(productions):
            if i == self.pad_index:
                self._unparse_rhs.append(())
            else:
                self._unparse_rhs.append(
                    tuple(s if isinstance(s, str) else self._nt_index.get(s.symbol(), -1) for s in reversed(p.rhs()))
                )
        self._tables: dict[str, Any] | None = None
        self._nltk_parser: nltk.ChartParser | None = None
        self._tensor_cache: dict[str, dict[str, torch.Tensor]] = {}
        self._warned_fallback = False

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _read_header(text: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for line in text.splitlines():
            m = _HEADER_RE.match(line)
            if not m:
                continue
            key, value = m.group(1), m.group(2)
            if key == "max_length":
                out[key] = int(value)
            elif key == "joiner":
                out[key] = json.loads(value) if value.startswith('"') else value
            elif key == "skip_whitespace":
                out[key] = value.lower() in ("1", "true", "yes")
            else:
                out[key] = value
        return out

    @classmethod
    def from_string(cls, text: str, max_length: int | None = None, name: str | None = None, **kwargs: Any) -> "Grammar":
        """Grammar from CFG text (nltk format with optional ``# key: value`` header lines).

        ``max_length`` and ``name`` override the header; ``joiner`` and
        ``skip_whitespace`` may be given as keyword arguments too.
        """
        return cls(text, max_length=max_length, name=name, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path, max_length: int | None = None, **kwargs: Any) -> "Grammar":
        """Grammar from a ``.cfg`` file; the name defaults to the file stem."""
        path = Path(path)
        kwargs.setdefault("name", path.stem)
        return cls(path.read_text(encoding="utf-8"), max_length=max_length, **kwargs)

    @classmethod
    def builtin(cls, name: str, max_length: int | None = None) -> "Grammar":
        """One of the packaged grammars: ``"smiles"`` or ``"expressions"``."""
        return cls(_builtin_text(name), max_length=max_length, name=name)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this grammar (store it in checkpoints)."""
        return {
            "text": self.text,
            "max_length": self.max_length,
            "name": self.name,
            "joiner": self.joiner,
            "skip_whitespace": self.skip_whitespace,
            "hash": self.hash,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Grammar":
        """Rebuild a grammar saved with :meth:`state_dict`; checks the hash."""
        g = cls(
            state["text"],
            max_length=state["max_length"],
            name=state.get("name"),
            joiner=state.get("joiner"),
            skip_whitespace=state.get("skip_whitespace"),
        )
        if "hash" in state and state["hash"] != g.hash:
            raise GrammarError(f"grammar {g.name}: hash mismatch ({state['hash'][:12]} vs {g.hash[:12]})")
        return g

    def __getstate__(self) -> dict[str, Any]:
        return self.state_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(Grammar.from_state_dict(state).__dict__)

    def __repr__(self) -> str:
        return (
            f"Grammar(name={self.name!r}, n_rules={self.n_rules}, n_nonterminals={len(self.nonterminals)}, "
            f"start={self.start!r}, max_length={self.max_length}, hash={self.hash[:12]})"
        )

    @property
    def n_nonterminals(self) -> int:
        """Number of non-terminals (rows of :attr:`masks`)."""
        return len(self.nonterminals)

    def _minimal_lengths(self) -> list[int]:
        """Fewest rules a complete derivation from each non-terminal needs (huge if none)."""
        best = [_INF] * len(self.nonterminals)
        changed = True
        while changed:
            changed = False
            for i in range(self.n_rules):
                if i == self.pad_index or any(a < 0 for a in self._rhs_nts[i]):
                    continue
                cost = 1 + sum(best[a] for a in self._rhs_nts[i])
                a = int(self.lhs[i])
                if cost < best[a]:
                    best[a] = cost
                    changed = True
        best[self._nothing_nt] = 0
        return best

    # ------------------------------------------------------------------ tokenizing

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into terminals by longest match.

        Raises:
            GrammarError: a character sequence that is no terminal (with its position).
        """
        body = text.strip() if self.skip_whitespace else text
        tokens = self._token_re.findall(body)
        if not self._terminal_set.issuperset(tokens):
            shift = len(text) - len(text.lstrip()) if self.skip_whitespace else 0
            for m in self._token_re.finditer(body):
                if m.group(1) not in self._terminal_set:
                    raise GrammarError(
                        f"{_short(text)}: character {m.group(1)!r} at position {m.start(1) + shift} "
                        f"is not a token of grammar {self.name}"
                    )
        return tokens

    # ------------------------------------------------------------------ LR tables

    def _build_tables(self) -> dict[str, Any]:
        """Build the LALR(1) action/goto tables (conflicts kept as tuples of actions)."""
        prods = self.productions
        R = self.n_rules
        aug = R  # augmented rule S' -> start
        start_nt = Nonterminal(self.start)
        rhs: list[tuple] = [tuple(p.rhs()) for p in prods] + [(start_nt,)]
        lhs_sym: list[Any] = [p.lhs() for p in prods] + [Nonterminal("$accept")]
        by_lhs: dict[Any, list[int]] = {}
        for i in range(R):
            if i == self.pad_index:
                continue
            by_lhs.setdefault(lhs_sym[i], []).append(i)

        # nullable and FIRST
        nullable: set = set()
        first: dict[Any, set] = {nt: set() for nt in by_lhs}
        changed = True
        while changed:
            changed = False
            for nt, rules in by_lhs.items():
                for r in rules:
                    all_null = True
                    for s in rhs[r]:
                        if isinstance(s, str):
                            if s not in first[nt]:
                                first[nt].add(s)
                                changed = True
                            all_null = False
                            break
                        if s not in first:  # undefined non-terminal: derives nothing
                            all_null = False
                            break
                        if not first[s] <= first[nt]:
                            first[nt] |= first[s]
                            changed = True
                        if s not in nullable:
                            all_null = False
                            break
                    if all_null and nt not in nullable:
                        nullable.add(nt)
                        changed = True

        def first_seq(seq: Sequence) -> tuple[set, bool]:
            out: set = set()
            for s in seq:
                if isinstance(s, str):
                    out.add(s)
                    return out, False
                if s not in first:
                    return out, False
                out |= first[s]
                if s not in nullable:
                    return out, False
            return out, True

        # cyclic grammars (A =>+ A) make LR parsing loop: use the chart parser
        unit: dict[Any, set] = {nt: set() for nt in by_lhs}
        for nt, rules in by_lhs.items():
            for r in rules:
                seq = rhs[r]
                for j, s in enumerate(seq):
                    if isinstance(s, Nonterminal) and s in by_lhs:
                        rest = seq[:j] + seq[j + 1 :]
                        if all(isinstance(x, Nonterminal) and x in nullable for x in rest):
                            unit[nt].add(s)
        cyclic = False
        for nt in by_lhs:
            seen, todo = set(), list(unit[nt])
            while todo:
                x = todo.pop()
                if x == nt:
                    cyclic = True
                    break
                if x not in seen:
                    seen.add(x)
                    todo.extend(unit[x])
            if cyclic:
                break
        if cyclic:
            logger.warning("grammar %s is cyclic (A =>+ A); parsing uses nltk's chart parser (slow)", self.name)
            return {"cyclic": True}

        # LR(0) automaton
        def closure0(kernel: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
            items = set(kernel)
            todo = list(items)
            while todo:
                r, d = todo.pop()
                if d < len(rhs[r]):
                    s = rhs[r][d]
                    if isinstance(s, Nonterminal):
                        for r2 in by_lhs.get(s, ()):
                            if (r2, 0) not in items:
                                items.add((r2, 0))
                                todo.append((r2, 0))
            return items

        k0 = frozenset([(aug, 0)])
        kernels: list[frozenset] = [k0]
        index = {k0: 0}
        trans: list[dict[Any, int]] = []
        i = 0
        while i < len(kernels):
            items = closure0(kernels[i])
            moves: dict[Any, set] = {}
            for r, d in items:
                if d < len(rhs[r]):
                    moves.setdefault(rhs[r][d], set()).add((r, d + 1))
            tr: dict[Any, int] = {}
            for sym, kern in moves.items():
                fk = frozenset(kern)
                if fk not in index:
                    index[fk] = len(kernels)
                    kernels.append(fk)
                tr[sym] = index[fk]
            trans.append(tr)
            i += 1
        n_states = len(kernels)

        # LALR(1) look-aheads by fixpoint propagation over the LR(0) automaton
        la: list[dict[tuple[int, int], set]] = [{it: set() for it in k} for k in kernels]
        la[0][(aug, 0)].add(_EOF)

        def closure1(state: int) -> dict[tuple[int, int], set]:
            items = {it: set(v) for it, v in la[state].items()}
            todo = list(items)
            while todo:
                it = todo.pop()
                r, d = it
                if d >= len(rhs[r]):
                    continue
                s = rhs[r][d]
                if not isinstance(s, Nonterminal) or s not in by_lhs:
                    continue
                f, null = first_seq(rhs[r][d + 1 :])
                new = f | items[it] if null else f
                for r2 in by_lhs[s]:
                    it2 = (r2, 0)
                    cur = items.get(it2)
                    if cur is None:
                        items[it2] = set(new)
                        todo.append(it2)
                    elif not new <= cur:
                        cur |= new
                        todo.append(it2)
            return items

        changed = True
        while changed:
            changed = False
            for s in range(n_states):
                for (r, d), look in closure1(s).items():
                    if d < len(rhs[r]) and look:
                        target = la[trans[s][rhs[r][d]]][(r, d + 1)]
                        if not look <= target:
                            target |= look
                            changed = True

        # action / goto tables
        nt_key = {Nonterminal(s): i for i, s in enumerate(self.nonterminals)}
        action: list[dict[Any, Any]] = []
        goto: list[dict[int, int]] = []
        n_conflicts = 0
        conflict_examples: list[str] = []
        for s in range(n_states):
            acts: dict[Any, list[int]] = {}
            gt: dict[int, int] = {}
            for sym, tgt in trans[s].items():
                if isinstance(sym, str):
                    acts.setdefault(sym, []).append(tgt)
                elif sym in nt_key:
                    gt[nt_key[sym]] = tgt
            for (r, d), look in closure1(s).items():
                if d == len(rhs[r]):
                    for tok in look:
                        acts.setdefault(tok, []).append(-r - 1)
            row: dict[Any, Any] = {}
            for tok, lst in acts.items():
                if len(lst) == 1:
                    row[tok] = lst[0]
                else:
                    lst.sort(reverse=True)  # shifts first, then reductions
                    row[tok] = tuple(lst)
                    n_conflicts += 1
                    if len(conflict_examples) < 5:
                        conflict_examples.append(f"state {s} on {tok!r}: {len(lst)} actions")
            action.append(row)
            goto.append(gt)
        if n_conflicts:
            logger.info(
                "grammar %s: LALR(1) table has %d conflicting cells (%s); resolved by forking (generalised LR)",
                self.name, n_conflicts, "; ".join(conflict_examples),
            )
        rule_len = [len(r) for r in rhs]
        rule_lhs = [nt_key.get(l, -1) for l in lhs_sym]
        return {
            "cyclic": False,
            "action": action,
            "goto": goto,
            "rule_len": rule_len,
            "rule_lhs": rule_lhs,
            "accept": -aug - 1,
            "n_states": n_states,
            "n_conflicts": n_conflicts,
        }

    @property
    def lr_info(self) -> dict[str, Any]:
        """Size of the LR automaton: ``{"n_states", "n_conflicts", "cyclic"}``."""
        t = self._lr_tables()
        return {"n_states": t.get("n_states", 0), "n_conflicts": t.get("n_conflicts", 0), "cyclic": t["cyclic"]}

    def _lr_tables(self) -> dict[str, Any]:
        if self._tables is None:
            self._tables = self._build_tables()
        return self._tables

    # ------------------------------------------------------------------ parsing

    def _glr(self, tokens: list[str]) -> list[int] | str:
        """Generalised LR parse. Returns the derivation, or a reason string:
        ``"fail:<i>"`` (no parse, dead at token i), ``"ambiguous"`` or ``"overflow"``."""
        tab = self._tables
        action = tab["action"]
        goto = tab["goto"]
        rule_len = tab["rule_len"]
        rule_lhs = tab["rule_lhs"]
        accept = tab["accept"]
        stacks: list[tuple[list[int], list]] = [([0], [])]
        results: list[list[int]] = []
        forks = 0
        pos = 0
        for tok in itertools.chain(tokens, (_EOF,)):
            forks_here = 0
            survivors: list[tuple[list[int], list]] = []
            work: list[tuple[list[int], list, Any]] = [(st, vs, None) for st, vs in stacks]
            while work:
                st, vs, forced = work.pop()
                while True:
                    if forced is None:
                        a = action[st[-1]].get(tok)
                        if a is None:
                            break
                        if a.__class__ is tuple:
                            # bounded: hidden left recursion (A -> B A ..., B =>* empty)
                            # would otherwise fork forever on one token
                            forks += len(a) - 1
                            forks_here += len(a) - 1
                            if forks > _MAX_FORKS or forks_here > _MAX_FORKS_PER_TOKEN:
                                return "overflow"
                            for alt in a[1:]:
                                work.append((st.copy(), vs.copy(), alt))
                            a = a[0]
                    else:
                        a, forced = forced, None
                    if a >= 0:
                        st.append(a)
                        vs.append(_EMPTY)
                        survivors.append((st, vs))
                        break
                    if a == accept:
                        results.append(vs[-1])
                        break
                    r = -a - 1
                    n = rule_len[r]
                    seq = [r]
                    if n:
                        for v in vs[-n:]:
                            seq += v
                        del st[-n:]
                        del vs[-n:]
                    st.append(goto[st[-1]][rule_lhs[r]])
                    vs.append(seq)
            if tok is _EOF:
                break
            if not survivors:
                return f"fail:{pos}"
            if len(survivors) > _MAX_STACKS:
                return "overflow"
            stacks = survivors
            pos += 1
        if not results:
            return f"fail:{len(tokens)}"
        if len(results) > 1:
            return "ambiguous"
        return results[0]

    def _nltk_parse(self, tokens: list[str]) -> list[int] | None:
        if self._nltk_parser is None:
            self._nltk_parser = nltk.ChartParser(self.cfg)
        tree = next(self._nltk_parser.parse(tokens), None)
        if tree is None:
            return None
        return [self._prod_index[p] for p in tree.productions()]

    def _parse_tokens(self, tokens: list[str], text: str) -> list[int]:
        if not tokens:
            raise GrammarError(f"{_short(text)}: no parse (empty input)")
        tab = self._lr_tables()
        if tab["cyclic"]:
            out = self._nltk_parse(tokens)
            reason = "no parse"
        else:
            out = self._glr(tokens)
            if out.__class__ is str:
                reason = out
                if reason.startswith("fail:"):
                    i = int(reason[5:])
                    where = f"at token {i} ({tokens[i]!r})" if i < len(tokens) else "at the end of the input"
                    raise GrammarError(f"{_short(text)}: no parse in grammar {self.name}, unexpected {where}")
                if not self._warned_fallback:
                    logger.warning(
                        "grammar %s: input %s is %s for the LR parser; using nltk's chart parser",
                        self.name, _short(text), reason,
                    )
                    self._warned_fallback = True
                out = self._nltk_parse(tokens)
                reason = "no parse"
        if out is None:
            raise GrammarError(f"{_short(text)}: {reason} in grammar {self.name}")
        if len(out) > self.max_length:
            raise GrammarError(
                f"{_short(text)}: derivation has {len(out)} rules, longer than max_length {self.max_length}"
            )
        return out

    def parse(self, text: str) -> list[int]:
        """Rule indices of the leftmost derivation of ``text``.

        Identical to ``[productions.index(p) for p in next(nltk.ChartParser(cfg).parse(tokens)).productions()]``.

        Raises:
            GrammarError: unknown token, no parse, or more than ``max_length`` rules.
        """
        return self._parse_tokens(self.tokenize(text), text)

    def parse_tokens(self, tokens: list[str]) -> list[int]:
        """Like :meth:`parse` for an already tokenized input."""
        return self._parse_tokens(list(tokens), self.joiner.join(tokens))

    def _parse_chunk(self, texts: Sequence[str], start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        dtype = self.ids_dtype
        flat: list[int] = []
        lengths: list[int] = []
        ok: list[int] = []
        failures: list[tuple[int, str, str]] = []
        parse = self.parse
        for j, text in enumerate(texts):
            try:
                seq = parse(text)
            except GrammarError as exc:
                failures.append((start + j, text, str(exc)))
                continue
            flat += seq
            lengths.append(len(seq))
            ok.append(start + j)
        return (
            np.asarray(flat, dtype=dtype),
            np.asarray(lengths, dtype=np.int32),
            np.asarray(ok, dtype=np.int64),
            failures,
        )

    @property
    def ids_dtype(self) -> type:
        """Smallest numpy integer type holding every rule index."""
        if self.n_rules <= 256:
            return np.uint8
        if self.n_rules <= 32768:
            return np.int16
        return np.int32

    def parse_many(
        self,
        texts: Sequence[str],
        workers: int = 1,
        progress: bool = True,
        chunk_size: int = 2000,
    ) -> ParseResult:
        """Parse many strings; failures are collected, not raised.

        Args:
            texts: the inputs.
            workers: processes to use (``1``: in this process).
            progress: show a tqdm progress bar.
            chunk_size: inputs per task sent to a worker.

        Returns:
            :class:`ParseResult` with flat compact ids (see there).
        """
        from tqdm.auto import tqdm

        texts = list(texts)
        n = len(texts)
        self._lr_tables()
        chunks = [(i, texts[i : i + chunk_size]) for i in range(0, n, chunk_size)]
        parts: list[tuple] = []
        bar = tqdm(total=n, disable=not progress, desc=f"parse {self.name}", unit="str")
        try:
            if workers <= 1 or len(chunks) <= 1:
                for start, chunk in chunks:
                    parts.append((start,) + self._parse_chunk(chunk, start))
                    bar.update(len(chunk))
            else:
                methods = multiprocessing.get_all_start_methods()
                ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
                with ctx.Pool(workers, initializer=_worker_init, initargs=(self.state_dict(),)) as pool:
                    for part in pool.imap(_worker_parse, chunks):
                        parts.append(part)
                        bar.update(len(chunks[len(parts) - 1][1]))
        finally:
            bar.close()
        dtype = self.ids_dtype
        ids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=dtype)
        lengths = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, dtype=np.int32)
        ok_index = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        failures = [f for p in parts for f in p[4]]
        if failures:
            logger.info("grammar %s: %d of %d inputs did not parse", self.name, len(failures), n)
        return ParseResult(
            ids=ids.astype(dtype, copy=False),
            lengths=lengths,
            ok_index=ok_index,
            failures=failures,
            pad_index=self.pad_index,
            n_inputs=n,
        )

    # ------------------------------------------------------------------ unparsing

    def _unparse_or_none(self, ids: Iterable[int]) -> tuple[str | None, str]:
        """Return ``(string, "")`` or ``(None, reason)``."""
        urhs = self._unparse_rhs
        lhs = self._lhs_list
        pad = self.pad_index
        n = self.n_rules
        stack: list[Any] = [self._start_nt]
        out: list[str] = []
        for k, r in enumerate(ids):
            r = int(r)
            if r == pad:
                if stack:
                    return None, f"padding rule at step {k} before the derivation is complete"
                continue
            if not stack:
                return None, f"rule {r} at step {k} after the derivation is complete"
            if not 0 <= r < n:
                return None, f"rule index {r} out of range at step {k}"
            top = stack.pop()
            if lhs[r] != top:
                return None, (
                    f"rule {r} ({self.productions[r]}) at step {k} cannot expand {self.nonterminals[top]}"
                )
            stack.extend(urhs[r])
            while stack and stack[-1].__class__ is str:
                out.append(stack.pop())
        if stack:
            return None, f"derivation incomplete ({len(stack)} pending symbols)"
        return self.joiner.join(out), ""

    @property
    def _lhs_list(self) -> list[int]:
        cached = self.__dict__.get("_lhs_list_cache")
        if cached is None:
            cached = self.lhs.tolist()
            self.__dict__["_lhs_list_cache"] = cached
        return cached

    def unparse(self, ids: Iterable[int] | torch.Tensor | np.ndarray) -> str:
        """String of a rule sequence (inverse of :meth:`parse`); trailing pad rules are ignored.

        Raises:
            GrammarError: the sequence is not a complete leftmost derivation.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        s, reason = self._unparse_or_none(ids)
        if s is None:
            raise GrammarError(f"cannot unparse sequence in grammar {self.name}: {reason}")
        return s

    def unparse_many(
        self,
        ids_2d: torch.Tensor | np.ndarray | Sequence[Sequence[int]],
        lengths: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    ) -> list[str | None]:
        """Strings of a batch of rule sequences ``[B, L]``; ``None`` for incomplete or invalid rows.

        Args:
            ids_2d: ``[B, L]`` rule indices (padded with the pad rule).
            lengths: optional ``[B]``; only the first ``lengths[b]`` rules of row ``b`` are read.
        """
        if isinstance(ids_2d, torch.Tensor):
            rows = ids_2d.detach().cpu().tolist()
        elif isinstance(ids_2d, np.ndarray):
            rows = ids_2d.tolist()
        else:
            rows = [list(r) for r in ids_2d]
        if lengths is not None:
            if isinstance(lengths, torch.Tensor):
                lengths = lengths.detach().cpu().tolist()
            elif isinstance(lengths, np.ndarray):
                lengths = lengths.tolist()
            rows = [row[: int(l)] for row, l in zip(rows, lengths)]
        return [self._unparse_or_none(row)[0] for row in rows]

    # ------------------------------------------------------------------ sampling

    def random_derivation(
        self,
        rng: random.Random | np.random.Generator,
        max_length: int | None = None,
        fit: bool = False,
    ) -> list[int] | None:
        """Random leftmost derivation, each rule drawn uniformly among those of the current symbol.

        Args:
            rng: ``random.Random`` or ``numpy.random.Generator``.
            max_length: length limit (default :attr:`max_length`).
            fit: if True, only rules that still allow finishing within ``max_length``
                are drawn (never returns None unless no derivation fits at all).

        Returns:
            rule indices, or ``None`` when the derivation exceeded ``max_length``.
        """
        limit = self.max_length if max_length is None else int(max_length)
        if isinstance(rng, np.random.Generator):
            pick = lambda n: int(rng.integers(n))  # noqa: E731
        else:
            pick = rng.randrange
        options = self._rules_by_nt
        rule_cost = self._rule_min_len
        min_len = self._min_len
        if fit and min_len[self._start_nt] > limit:
            return None
        stack = [self._start_nt]
        pending = min_len[self._start_nt]  # minimal rules still needed for the stack
        out: list[int] = []
        while stack:
            if len(out) >= limit:
                return None
            a = stack.pop()
            choices = options[a]
            if fit:
                slack = limit - len(out) - pending
                choices = [r for r in choices if rule_cost[r] - min_len[a] <= slack]
            r = choices[pick(len(choices))]
            out.append(r)
            pending += rule_cost[r] - 1 - min_len[a]
            stack.extend(reversed(self._rhs_nts[r]))
        return out

    @property
    def _rules_by_nt(self) -> list[list[int]]:
        cached = self.__dict__.get("_rules_by_nt_cache")
        if cached is None:
            cached = [[] for _ in self.nonterminals]
            for r in range(self.n_rules):
                if r != self.pad_index and self._usable[r]:
                    cached[int(self.lhs[r])].append(r)
            self.__dict__["_rules_by_nt_cache"] = cached
        return cached

    @property
    def _rule_min_len(self) -> list[int]:
        cached = self.__dict__.get("_rule_min_len_cache")
        if cached is None:
            cached = [1 + sum(self._min_len[a] for a in kids) for kids in self._rhs_nts]
            self.__dict__["_rule_min_len_cache"] = cached
        return cached

    # ------------------------------------------------------------------ decoding

    def _decode_tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        cached = self._tensor_cache.get(key)
        if cached is None:
            K = max((len(k) for k in self._rhs_nts), default=0)
            rhs = torch.full((self.n_rules, max(K, 1)), self._nothing_nt, dtype=torch.long)
            rhs_len = torch.zeros(self.n_rules, dtype=torch.long)
            for r, kids in enumerate(self._rhs_nts):
                rhs_len[r] = len(kids)
                for j, a in enumerate(reversed(kids)):
                    rhs[r, j] = a
            # candidate rules of each non-terminal, in rule order, padded with the pad rule
            per_nt = [self.masks[a].nonzero().flatten().tolist() or [self.pad_index] for a in range(self.n_nonterminals)]
            C = max(len(c) for c in per_nt)
            cand = torch.full((self.n_nonterminals, C), self.pad_index, dtype=torch.long)
            cand_valid = torch.zeros(self.n_nonterminals, C, dtype=torch.bool)
            for a, c in enumerate(per_nt):
                cand[a, : len(c)] = torch.tensor(c, dtype=torch.long)
                cand_valid[a, : len(c)] = True
            cand_dup = torch.where(cand_valid, cand, cand[:, :1])
            cached = {
                "cand_dup": cand_dup.to(device),
                "cand": cand.to(device),
                "cand_valid": cand_valid.to(device),
                "masks": self.masks.to(device),
                "lhs": self.lhs.to(device),
                "rhs_len": rhs_len.to(device),
                # minimal number of rules to finish each non-terminal (Nothing: 0), and the
                # sum of those over each rule's right-hand side (unusable rules: never fit)
                "nt_min": torch.tensor([0 if a == self._nothing_nt else min(self._min_len[a], _INF)
                                        for a in range(self.n_nonterminals)], dtype=torch.long).to(device),
                "rhs_min": torch.tensor([0 if r == self.pad_index else
                                         (sum(self._min_len[a] for a in kids) if self._usable[r] else _INF)
                                         for r, kids in enumerate(self._rhs_nts)], dtype=torch.long).to(device),
                "rhs16": (rhs[:, :K] if K else rhs[:, :0]).to(torch.int16).to(device),
                "rhs32": (rhs[:, :K] if K else rhs[:, :0]).to(torch.int32).to(device),
            }
            self._tensor_cache[key] = cached
        return cached

    def decoder_state(
        self, batch_size: int, device: torch.device | str | None = None, max_length: int | None = None,
        length_mask: bool = False,
    ) -> DecodeState:
        """Fresh :class:`DecodeState` (every stack holds the start symbol)."""
        return DecodeState(self, batch_size, device=device, max_length=max_length, length_mask=length_mask)

    def decode_logits(
        self,
        logits: torch.Tensor,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> DecodeResult:
        """Masked decoding of per-step logits from a non-autoregressive decoder.

        Step ``t`` pops the top non-terminal of each sample's stack, picks among that
        symbol's rules using ``logits[:, t]`` (greedy: first maximum, as :func:`select`;
        else a categorical sample at ``temperature``) and pushes the rule's
        right-hand-side non-terminals. Greedy results equal those of driving
        :class:`DecodeState` with :func:`select` (sampling draws from the same
        distribution, not the same random stream), but faster: only the logits of the
        top symbol's rules are read,
        and rows that are done or cut are dropped from the work every few steps. On CPU
        the loop runs with one intra-op thread (see ``_cpu_single_thread``).

        Args:
            logits: ``[B, L, R]`` (any float dtype); ``L`` is the number of steps
                (usually ``max_length``).
            greedy, temperature, generator: see :func:`select`.

        Returns:
            :class:`DecodeResult`: ``ids`` LongTensor ``[B, L]`` (pad rule after the end),
            ``lengths`` ``[B]``, ``finished`` ``[B]`` (False: cut, see the module docstring;
            ``unparse_many`` gives ``None`` for such rows).
        """
        if logits.dim() != 3 or logits.shape[2] != self.n_rules:
            raise ValueError(f"expected logits [B, L, {self.n_rules}], got {tuple(logits.shape)}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        B, L, R = logits.shape
        dev = logits.device
        tens = self._decode_tensors(dev)
        cand, valid, cand_dup = tens["cand"], tens["cand_valid"], tens["cand_dup"]  # [n_nt, C]
        rhs, rhs_len = tens["rhs32"], tens["rhs_len"]  # [R, K] int32, [R]
        C, K = cand.shape[1], rhs.shape[1]
        # Greedy on CPU reads the logits in two tiers: the first C1 candidates of every row,
        # then the rest only for rows whose top non-terminal has more than C1 rules (the
        # random reads into the logits dominate the cost; the second tier needs a host sync,
        # so other devices read all C candidates at once).
        C1 = min(C, _FIRST_TIER) if (greedy and dev.type == "cpu") else C
        C2 = C - C1
        cand1 = cand_dup[:, :C1].contiguous()
        has_more = valid.sum(dim=1) > C1  # [n_nt]: non-terminals with more than C1 rules
        fmax = torch.finfo(torch.float32).max
        with torch.no_grad(), _cpu_single_thread(dev):
            flat = logits.detach().contiguous().view(-1)
            # Stacks as in DecodeState (slot 0 holds Nothing, ptr = position of the top),
            # but only for the rows still running: every few steps the finished and cut
            # rows are dropped, so later steps work on fewer rows.
            rows = torch.arange(B, device=dev)
            stack = torch.full((B, L + K + 2), self._nothing_nt, dtype=torch.int32, device=dev)
            stack[:, 1] = self._start_nt
            ptr = torch.ones(B, dtype=torch.long, device=dev)
            cut_rows = torch.zeros(B, dtype=torch.bool, device=dev)
            cut = torch.zeros(B, dtype=torch.bool, device=dev)
            ids = torch.full((B, L), self.pad_index, dtype=torch.long, device=dev)
            offsets = torch.arange(1, K + 1, device=dev).unsqueeze(0)
            row_base = rows * (L * R)  # flat offset of each row's logits
            slot_base = rows * C1
            full_slots = rows * C
            upcast = flat.dtype != torch.float32
            for t in range(L):
                if t % 8 == 0:
                    keep = ptr > 0
                    n_keep = int(keep.sum())
                    if n_keep == 0:
                        break
                    if n_keep < 0.85 * rows.numel():
                        cut.index_copy_(0, rows, cut_rows)
                        sel = keep.nonzero().squeeze(1)
                        rows, stack = rows.index_select(0, sel), stack.index_select(0, sel)
                        ptr, cut_rows = ptr.index_select(0, sel), cut_rows.index_select(0, sel)
                        row_base = rows * (L * R)
                        slot_base = slot_base[: rows.numel()]
                # Only the rules of the top non-terminal matter: read their logits
                # ([n, C], C = most rules of one non-terminal) instead of masking all R.
                top = stack.gather(1, ptr.unsqueeze(1)).view(-1)  # int32 [n]
                base = (row_base + t * R).unsqueeze(1)  # [n, 1]
                if greedy:
                    idx = cand1.index_select(0, top)
                    vals = flat.index_select(0, (idx + base).view(-1)).view(-1, C1)
                    if upcast:
                        vals = vals.float()
                    # first maximum (padding slots repeat slot 0, so they never change the
                    # rule); max().indices is much faster than argmax() for short rows on CPU
                    choice = vals.nan_to_num_(nan=float("-inf"), posinf=fmax).max(dim=1).indices
                    rule = torch.take(idx, slot_base + choice)
                    if C2:
                        # rows whose symbol has more than C1 rules: redo them over all C
                        more = has_more.index_select(0, top).nonzero().view(-1)
                        m = more.numel()
                        if m:
                            idx_m = cand_dup.index_select(0, top.index_select(0, more))
                            vals_m = flat.index_select(0, (idx_m + base.index_select(0, more)).view(-1)).view(m, C)
                            if upcast:
                                vals_m = vals_m.float()
                            choice_m = vals_m.nan_to_num_(nan=float("-inf"), posinf=fmax).max(dim=1).indices
                            rule.index_copy_(0, more, torch.take(idx_m, full_slots[:m] + choice_m))
                else:
                    idx = cand.index_select(0, top)
                    vals = flat.index_select(0, (idx + base).view(-1)).view(-1, C)
                    choice = select(
                        vals, valid.index_select(0, top), greedy=False, temperature=temperature, generator=generator
                    )
                    rule = torch.take(idx, slot_base + choice)
                ids.select(1, t).index_copy_(0, rows, rule)
                ptr = (ptr - 1).clamp_(min=0)
                stack.scatter_(1, ptr.unsqueeze(1) + offsets, rhs.index_select(0, rule))
                ptr += rhs_len.index_select(0, rule)
                # a row with more pending non-terminals than steps left can never finish
                newly_cut = ptr > (L - t - 1)
                cut_rows |= newly_cut
                ptr.masked_fill_(newly_cut, 0)
            cut.index_copy_(0, rows, cut_rows | (ptr > 0))
            lengths = (ids != self.pad_index).count_nonzero(dim=1)
        return DecodeResult(ids=ids, lengths=lengths, finished=~cut)

    def lhs_masks(self, ids: torch.Tensor) -> torch.Tensor:
        """Masks of the true rules' left-hand sides for the training loss.

        Args:
            ids: LongTensor ``[B, L]`` of rule indices (pad positions use the pad rule).

        Returns:
            BoolTensor ``[B, L, R]`` = ``masks[lhs[ids]]`` (pad positions allow only the pad rule).
        """
        tens = self._decode_tensors(ids.device)
        flat = ids.reshape(-1).long()
        rows = tens["lhs"].index_select(0, flat)
        return tens["masks"].index_select(0, rows).view(*ids.shape, self.n_rules)


@contextlib.contextmanager
def _cpu_single_thread(device: torch.device) -> Iterator[None]:
    """Run torch CPU ops single-threaded inside the block (restored afterwards).

    The decoding loop is hundreds of tiny, latency-bound ops; intra-op threads add
    synchronisation to each and, when the cores are shared with other processes,
    make the loop many times slower (measured: 0.6 s single-threaded vs 16 s with 2
    threads on an oversubscribed 2-core machine). Note that ``torch.set_num_threads``
    is process-wide.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


COMPACT_SUFFIX = "_compact"


def _right_recursive(by_lhs: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """Replace immediate left recursion A -> A s_i | b_j by A -> b_j | b_j A_tail, A_tail -> s_i | s_i A_tail.

    Same language (b (s)*) and the same number of rules per derivation. Why: with
    ``chain -> chain branched_atom`` a left-to-right decoder must fix the number of top-level
    atoms before it writes the first one; with the right-recursive form it decides, atom by
    atom, whether to go on, which is what it can see (e.g. after the rings are closed).
    """
    out: dict[str, list[tuple]] = {}
    for nt, alts in by_lhs.items():
        rec = [r[1:] for r in alts if len(r) > 1 and isinstance(r[0], Nonterminal) and r[0].symbol() == nt]
        if not rec:
            out[nt] = alts
            continue
        base = [r for r in alts if not (r and isinstance(r[0], Nonterminal) and r[0].symbol() == nt)]
        tail = Nonterminal(f"{nt}_tail")
        out[nt] = [*base, *[(*b, tail) for b in base]]
        out[tail.symbol()] = [*rec, *[(*s, tail) for s in rec]]
    return out


def compact_grammar_text(text: str, right_recursive: bool = True) -> str:
    """The same language, with right recursion and no unit rules (A -> B).

    ``right_recursive``: immediate left recursion is rewritten first (:func:`_right_recursive`).
    Then each chain of unit rules A -> B -> ... -> alpha becomes one rule A -> alpha.

    Why: in the Grammar VAE's SMILES grammar an aliphatic atom costs four rules
    (branched_atom -> atom -> aliphatic_organic -> 'C'); after elimination it costs one, and the
    leftmost derivations of MOSES molecules halve in length (mean 112 -> 58 rules), which halves
    decoder steps and the number of choices that must all be right for an exact reconstruction.
    The map between derivations is one-to-one (a unit rule is always followed by the expansion of
    its right-hand side), so an unambiguous grammar stays unambiguous. Header lines (max_length,
    joiner) are kept; non-terminals no longer reachable from the start symbol are dropped; the
    padding rule stays last. Raises GrammarError on a cycle of unit rules (A -> B -> A).
    """
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    header = [line for line in text.splitlines() if _HEADER_RE.match(line) and "name" not in line.split(":")[0]]
    cfg = nltk.CFG.fromstring(body)
    by_lhs: dict[str, list[tuple]] = {}
    for p in cfg.productions():
        by_lhs.setdefault(p.lhs().symbol(), []).append(tuple(p.rhs()))
    if right_recursive:
        by_lhs = _right_recursive(by_lhs)

    def expand(nt: str, path: tuple[str, ...]) -> list[tuple]:
        out: list[tuple] = []
        for rhs in by_lhs[nt]:
            if nt != PAD_LHS and len(rhs) == 1 and isinstance(rhs[0], Nonterminal) and rhs[0].symbol() in by_lhs:
                target = rhs[0].symbol()
                if target in path:
                    raise GrammarError(f"cycle of unit rules: {' -> '.join(path + (target,))}")
                out += [r for r in expand(target, path + (target,)) if r not in out]
            elif rhs not in out:
                out.append(rhs)
        return out

    rules = {nt: expand(nt, (nt,)) for nt in by_lhs}
    reachable, todo = set(), [cfg.start().symbol()]
    while todo:
        nt = todo.pop()
        if nt not in reachable:
            reachable.add(nt)
            todo += [s.symbol() for rhs in rules[nt] for s in rhs if isinstance(s, Nonterminal) and s.symbol() in rules]
    order = [nt for nt in by_lhs if nt in reachable and nt != PAD_LHS] + [PAD_LHS]

    def fmt(rhs: tuple) -> str:
        return " ".join(s.symbol() if isinstance(s, Nonterminal) else f"'{s}'" for s in rhs)

    lines = [f"{nt} -> " + " | ".join(fmt(r) for r in rules[nt]) for nt in order if nt in rules]
    what = "left recursion made right-recursive, unit rules eliminated" if right_recursive else "unit rules eliminated"
    return "\n".join([f"# Generated by discrete_rae.grammar.compact_grammar_text: {what}.",
                      *header, *lines]) + "\n"


def builtin_names() -> list[str]:
    """Names accepted by :meth:`Grammar.builtin`: the packaged ``.cfg`` files and their ``_compact`` forms."""
    names: set[str] = set()
    try:
        from importlib.resources import files

        names |= {res.name[:-4] for res in files("discrete_rae.grammars").iterdir() if res.name.endswith(".cfg")}
    except (ModuleNotFoundError, ImportError):
        pass
    names |= {path.stem for path in (Path(__file__).resolve().parent.parent / "grammars").glob("*.cfg")}
    return sorted(names | {name + COMPACT_SUFFIX for name in names})


def _builtin_text(name: str) -> str:
    """Text of a packaged grammar file (``NAME_compact``: that file without unit rules)."""
    if name.endswith(COMPACT_SUFFIX):
        return compact_grammar_text(_builtin_text(name[: -len(COMPACT_SUFFIX)]))
    fname = f"{name}.cfg"
    try:
        from importlib.resources import files

        res = files("discrete_rae.grammars") / fname
        if res.is_file():
            return res.read_text(encoding="utf-8")
    except (ModuleNotFoundError, ImportError):
        pass
    # source checkout without installation: grammars/ lies next to the package
    path = Path(__file__).resolve().parent.parent / "grammars" / fname
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise GrammarError(f"no builtin grammar {name!r} (expected {fname} in discrete_rae.grammars)")
