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

Modules: :mod:`.core` (the Grammar class), :mod:`.lr` (LALR/GLR tables and parse),
:mod:`.parse` (parse_many and its workers), :mod:`.decode` (DecodeState, select,
decode_logits), :mod:`.derive` (random derivations), :mod:`.compact` (compact form),
:mod:`.builtin` (packaged grammars), and the SMILES decoding constraints :mod:`.ring`
(ring-closure digits), :mod:`.chem` (valence and bonds; rule tables in :mod:`.chem_rules`) and
:mod:`.chem_reference` (their one-sample reference implementation, the test oracle), with
:mod:`.packs` (their per-rule tables packed per top symbol) and :mod:`.constrained` (decoding a
logits tensor through a constrained state, finished rows dropped).
"""

from __future__ import annotations

from ..errors import GrammarError
from .builtin import builtin_names
from .common import PAD_LHS
from .compact import COMPACT_SUFFIX, compact_grammar_text
from .core import Grammar
from .decode import DecodeResult, DecodeState, select
from .parse import ParseResult

__all__ = [
    "GrammarError",
    "Grammar",
    "ParseResult",
    "DecodeState",
    "DecodeResult",
    "select",
    "PAD_LHS",
    "COMPACT_SUFFIX",
    "builtin_names",
    "compact_grammar_text",
]
