"""Domain codecs: text <-> integer token sequences, and constrained decoding.

A sequence codec turns strings into padded id arrays [N, L] and back, and tells a decoder
which tokens are allowed:

- :class:`GrammarCodec`: ids are production rules of the leftmost derivation under a
  context-free grammar (Kusner et al. 2017); at every decoding step only the rules whose
  left-hand side is the non-terminal on top of the per-sample stack are allowed, so every
  finished decode is syntactically valid.
- :class:`CharCodec`: ids are characters plus an end token (the CVAE baseline); no mask.
- ``SelfiesCodec`` (:mod:`discrete_rae.selfies_codec`): SELFIES tokens plus an end token;
  no mask, every decode is a molecule.

Both expose the same interface, so models and the trainer never know which one they have.
Codec state is plain data (grammar text, vocabulary) stored in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .grammar import Grammar, select
from .grammar.constrained import decode_states
from .grammar.chem import ChemState, chem_tables_cached, uses_aromatic_atoms
from .grammar.ring import RingClosureState, ring_tables


@dataclass
class EncodedTexts:
    """ids: [N, L] uint8/int16 padded token ids; lengths: [N] tokens used (end token included);
    texts: the N kept strings; failures: (index, text, reason) of the rejected ones."""

    ids: np.ndarray
    lengths: np.ndarray
    texts: list[str]
    failures: list[tuple[int, str, str]] = field(default_factory=list)


class SequenceCodec:
    """Interface shared by the sequence codecs."""

    kind = "base"
    vocab_size: int
    max_length: int
    pad_index: int

    def encode(self, texts: list[str], cache_dir: Path | None = None, workers: int = 1,
               progress: bool = True) -> EncodedTexts:
        raise NotImplementedError

    def step_mask(self, ids: Tensor) -> Tensor | None:
        """Allowed tokens per step given the true sequence, [B, L, V] bool, or None (all)."""
        return None

    def new_state(self, batch_size: int, device: torch.device | None = None) -> Any:
        """Incremental decoding state with ``allowed()``, ``push(ids)`` and ``done``."""
        raise NotImplementedError

    def decode_logits(self, logits: Tensor, greedy: bool = True, temperature: float = 1.0,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Constrained decoding of a full tensor of logits [B, L, V] -> (ids [B, L], finished [B])."""
        state = self.new_state(logits.shape[0], logits.device)
        for t in range(logits.shape[1]):
            state.push(select(logits[:, t], state.allowed(), greedy, temperature, generator))
        return state.ids, state.done

    def to_text(self, ids: Tensor, finished: Tensor) -> list[str | None]:
        """Strings of finished rows; None for rows that did not finish within max_length."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class GrammarCodec(SequenceCodec):
    """Production-rule sequences of a context-free grammar."""

    kind = "grammar"

    def __init__(self, grammar: Grammar, max_length: int | None = None, length_mask: bool = True,
                 ring_mask: bool = True, chem_mask: bool = True) -> None:
        self.grammar = grammar
        # decoding options, not data: set from EvalConfig by the pipeline
        self.length_mask = length_mask
        self.ring_mask = ring_mask
        self.chem_mask = chem_mask  # valence / bond checks (discrete_rae.grammar.chem); needs ring_mask
        self.aromatic = True  # aromatic atoms allowed by the chem mask; encode() sets it from the data
        self._ring_tables = ring_tables(grammar)  # None for grammars without ring bonds
        self.vocab_size = grammar.n_rules
        self.pad_index = grammar.pad_index
        self.max_length = int(max_length or grammar.max_length)

    def encode(self, texts: list[str], cache_dir: Path | None = None, workers: int = 1,
               progress: bool = True) -> EncodedTexts:
        from .data.cache import encode_cached

        enc = encode_cached(self.grammar, texts, cache_dir, workers=workers, progress=progress)
        self.aromatic = uses_aromatic_atoms(self.grammar, np.asarray(enc.ids))  # Kekule data: none
        return EncodedTexts(np.asarray(enc.ids), np.asarray(enc.lengths), list(enc.texts), list(enc.failures))

    def step_mask(self, ids: Tensor) -> Tensor:
        return self.grammar.lhs_masks(ids)

    def new_state(self, batch_size: int, device: torch.device | None = None) -> Any:
        state = self.grammar.decoder_state(batch_size, device=device, max_length=self.max_length,
                                           length_mask=self.length_mask)
        if self.ring_mask and self._ring_tables is not None:
            ring = RingClosureState(state, self._ring_tables)
            chem = chem_tables_cached(self.grammar, self.aromatic) if self.chem_mask else None
            return ChemState(ring, chem) if chem is not None else ring
        return state

    def decode_logits(self, logits: Tensor, greedy: bool = True, temperature: float = 1.0,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if not (self.length_mask or (self.ring_mask and self._ring_tables is not None)):
            # the fast batched decoder implements the paper's protocol (grammar mask, cut-off) only
            result = self.grammar.decode_logits(logits, greedy, temperature, generator)
            return result.ids, result.finished
        # rows dropped as they finish, candidates of the top symbol only (grammar.constrained)
        return decode_states(self.new_state, logits, self.max_length, self.pad_index, greedy, temperature, generator)

    def to_text(self, ids: Tensor, finished: Tensor) -> list[str | None]:
        ids_np, fin = ids.cpu().numpy(), finished.cpu().numpy()
        return [self.grammar.unparse(row.tolist()) if ok else None for row, ok in zip(ids_np, fin)]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "grammar": self.grammar.text, "grammar_hash": self.grammar.hash,
                "grammar_name": self.grammar.name, "max_length": self.max_length}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "GrammarCodec":
        return cls(Grammar.from_string(state["grammar"], name=state.get("grammar_name")), state["max_length"])


class CharCodec(SequenceCodec):
    """Characters plus an end token (index 0), the character-level baseline (CVAE)."""

    kind = "char"
    END = "\n"

    def __init__(self, alphabet: list[str], max_length: int) -> None:
        self.alphabet = [self.END] + [c for c in alphabet if c != self.END]
        self.index = {c: i for i, c in enumerate(self.alphabet)}
        self.vocab_size = len(self.alphabet)
        self.pad_index = 0
        self.max_length = int(max_length)

    @classmethod
    def fit(cls, texts: list[str], max_length: int | None = None) -> "CharCodec":
        """Vocabulary from the training strings; max_length = longest string + 1 (the end)."""
        alphabet = sorted({c for t in texts for c in t})
        return cls(alphabet, max_length or max(len(t) for t in texts) + 1)

    def encode(self, texts: list[str], cache_dir: Path | None = None, workers: int = 1,
               progress: bool = True) -> EncodedTexts:
        dtype = np.uint8 if self.vocab_size < 256 else np.int16
        ids = np.zeros((len(texts), self.max_length), dtype=dtype)
        kept, failures = [], []
        for i, text in enumerate(texts):
            unknown = [c for c in text if c not in self.index]
            if unknown or len(text) >= self.max_length:
                reason = f"unknown character {unknown[0]!r}" if unknown else f"longer than {self.max_length - 1} characters"
                failures.append((i, text, reason))
                continue
            ids[len(kept), : len(text)] = [self.index[c] for c in text]
            kept.append(text)
        lengths = np.array([len(t) + 1 for t in kept], dtype=np.int32)
        return EncodedTexts(ids[: len(kept)], lengths, kept, failures)

    def new_state(self, batch_size: int, device: torch.device | None = None) -> "_CharState":
        return _CharState(batch_size, self.vocab_size, device)

    def to_text(self, ids: Tensor, finished: Tensor) -> list[str | None]:
        out: list[str | None] = []
        for row, ok in zip(ids.cpu().tolist(), finished.cpu().tolist()):
            if not ok:
                out.append(None)
                continue
            end = row.index(0) if 0 in row else len(row)
            out.append("".join(self.alphabet[i] for i in row[:end]))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "alphabet": self.alphabet[1:], "max_length": self.max_length}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CharCodec":
        return cls(list(state["alphabet"]), state["max_length"])


class _CharState:
    """Decoding state of the character codec: after the end token only the end token."""

    def __init__(self, batch_size: int, vocab: int, device: torch.device | None) -> None:
        self.done = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self._steps: list[Tensor] = []
        self._vocab = vocab

    def allowed(self) -> Tensor:
        allowed = torch.ones(self.done.shape[0], self._vocab, dtype=torch.bool, device=self.done.device)
        allowed[self.done, 1:] = False
        return allowed

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` [B'] (beam search: the surviving beams)."""
        index = index.to(device=self.done.device, dtype=torch.long)
        self.done = self.done.index_select(0, index)
        self._steps = [self.ids.index_select(0, index)] if self._steps else []

    def push(self, ids: Tensor) -> None:
        self._steps.append(ids.unsqueeze(1))  # [B, 1] chunks (reorder merges them into one)
        self.done = self.done | (ids == 0)

    @property
    def ids(self) -> Tensor:
        return torch.cat(self._steps, 1)


# kind -> codec class; other families (pixels) add their codec here when imported.
CODECS: dict[str, Any] = {"grammar": GrammarCodec, "char": CharCodec}


def codec_from_state(state: dict[str, Any]) -> SequenceCodec:
    """Rebuild a codec saved with ``state_dict()``."""
    # Plugin codecs (selfies) register themselves when catalog.load_all() imports them, which
    # every caller that reads a checkpoint has done (pipeline.load_run via runconfig).
    if state["kind"] not in CODECS:
        raise KeyError(f"codec kind {state['kind']!r} is not registered (known: {', '.join(sorted(CODECS))})")
    return CODECS[state["kind"]].from_state(state)
