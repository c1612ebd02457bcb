"""The :class:`Grammar` class: loading a CFG, its tables and state, tokenizing, parsing, unparsing.

The long algorithms live in sibling modules and the methods here delegate to them: LR table
construction and the generalised LR parse (:mod:`.lr`), parsing many strings (:mod:`.parse`),
batched decoding (:mod:`.decode`), random derivations (:mod:`.derive`), packaged grammars
(:mod:`.builtin`). The module docstring of :mod:`discrete_rae.grammar` describes the behaviour.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import nltk
import numpy as np
import torch
from nltk.grammar import Nonterminal, Production

from ..errors import GrammarError
# submodules by full name: `from . import x` would read as an import of the package itself
import discrete_rae.grammar.decode as decode
import discrete_rae.grammar.derive as derive
import discrete_rae.grammar.lr as lr
import discrete_rae.grammar.parse as parse
from .builtin import _builtin_text
from .common import _HEADER_RE, _INF, PAD_LHS, _short
from .decode import DecodeResult, DecodeState
from .parse import ParseResult

logger = logging.getLogger(__name__)


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
        return derive.minimal_lengths(self)

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
        """Build the LALR(1) action/goto tables (see :func:`discrete_rae.grammar.lr.build_tables`)."""
        return lr.build_tables(self)

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
        """Generalised LR parse (see :func:`discrete_rae.grammar.lr.glr`)."""
        return lr.glr(self._tables, tokens)

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
        return parse.parse_chunk(self, texts, start)

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
        """Parse many strings (failures collected, not raised): see :func:`grammar.parse.parse_many`."""
        return parse.parse_many(self, texts, workers=workers, progress=progress, chunk_size=chunk_size)

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
        """Random leftmost derivation (rules drawn uniformly): see :func:`grammar.derive.random_derivation`."""
        return derive.random_derivation(self, rng, max_length=max_length, fit=fit)

    @property
    def _rules_by_nt(self) -> list[list[int]]:
        cached = self.__dict__.get("_rules_by_nt_cache")
        if cached is None:
            cached = derive.rules_by_nt(self)
            self.__dict__["_rules_by_nt_cache"] = cached
        return cached

    @property
    def _rule_min_len(self) -> list[int]:
        cached = self.__dict__.get("_rule_min_len_cache")
        if cached is None:
            cached = derive.rule_min_len(self)
            self.__dict__["_rule_min_len_cache"] = cached
        return cached


    # ------------------------------------------------------------------ decoding

    def _decode_tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Decoding tables on ``device`` (cached; see :func:`discrete_rae.grammar.decode.decode_tensors`)."""
        return decode.decode_tensors(self, device)

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
        """Masked decoding of per-step logits ``[B, L, R]``: see :func:`grammar.decode.decode_logits`."""
        return decode.decode_logits(self, logits, greedy=greedy, temperature=temperature, generator=generator)

    def lhs_masks(self, ids: torch.Tensor) -> torch.Tensor:
        """Masks of the true rules' left-hand sides for the training loss.

        Args:
            ids: LongTensor ``[B, L]`` of rule indices (pad positions use the pad rule).

        Returns:
            BoolTensor ``[B, L, R]`` = ``masks[lhs[ids]]`` (pad positions allow only the pad rule).
        """
        return decode.lhs_masks(self, ids)
