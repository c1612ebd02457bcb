"""SELFIES codec: molecules as sequences of SELFIES tokens (Krenn et al. 2020).

    SMILES --sf.encoder--> SELFIES string --sf.split_selfies--> tokens --vocabulary--> ids [L]
    ids --vocabulary--> tokens (up to the end token) --join--> SELFIES --sf.decoder--> SMILES
    --RDKit--> canonical SMILES

Every token string decodes to a molecule that obeys the valence rules, so a decoder over
this vocabulary needs no mask at all: like the character codec, the only constraint is
"after the end token, only the end token". Exceptions, counted as invalid by the domain:

- an *empty* decode (end token first, or tokens that write no atom such as a lone
  ``[Ring1]``): ``sf.decoder`` returns ``""``, which :func:`discrete_rae.chem.canonical`
  rejects; :meth:`SelfiesCodec.to_text` returns ``""`` for it;
- a decode that RDKit still refuses (SELFIES' valence rules are not RDKit's in every
  charged or bracket case): returned as SELFIES decoded it, and the domain's RDKit check
  counts it invalid.

A row without an end token within ``max_length`` is still decoded (SELFIES truncation is a
molecule too); ``finished`` is False for it, which only beam search reads.

SMILES that ``sf.encoder`` rejects (semantic constraints violated, parse failure) are
failures of :meth:`SelfiesCodec.encode` with the encoder's reason, never an exception.
The vocabulary comes from the training strings, as for the character codec; codec state
is plain data (token list, max_length).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .codecs import CODECS, CharCodec, EncodedTexts

log = logging.getLogger(__name__)


def _sf() -> Any:
    """The selfies package, imported on first use (keeps ``import discrete_rae`` light)."""
    import selfies

    return selfies


def smiles_to_selfies(smiles: str) -> tuple[str | None, str]:
    """SELFIES string of ``smiles``, or ``(None, reason)`` when SELFIES cannot encode it."""
    sf = _sf()
    try:
        encoded = sf.encoder(smiles)
    except sf.EncoderError as err:
        # the message's first line names the problem; later lines repeat the SMILES
        return None, f"selfies encoder: {str(err).splitlines()[0].strip()}"
    except Exception as err:  # noqa: BLE001 - a bad line must never stop a data set load
        return None, f"selfies encoder: {type(err).__name__}"
    if not encoded:
        return None, "selfies encoder: empty SELFIES"
    return encoded, ""


def smiles_to_tokens(smiles: str) -> tuple[list[str] | None, str]:
    """SELFIES tokens of ``smiles``, or ``(None, reason)``."""
    encoded, reason = smiles_to_selfies(smiles)
    return (None, reason) if encoded is None else (list(_sf().split_selfies(encoded)), "")


def tokens_to_smiles(tokens: list[str]) -> str:
    """Canonical SMILES of a SELFIES token list; ``""`` when it decodes to no atom.

    If RDKit rejects what SELFIES decoded, the decoder's SMILES is returned unchanged (the
    caller's validity check then counts it invalid).
    """
    from .chem import canonical

    sf = _sf()
    try:
        smiles = sf.decoder("".join(tokens))
    except Exception:  # noqa: BLE001 - decoder errors on symbols of the vocabulary are not expected
        return ""
    if not smiles:
        return ""
    return canonical(smiles) or smiles


class SelfiesCodec(CharCodec):
    """SELFIES tokens plus an end token (index 0, also the padding).

    Shares the character codec's vocabulary handling, decoding state (no mask before the end
    token) and state layout; differs in tokenisation and in :meth:`to_text`.
    """

    kind = "selfies"

    def __init__(self, alphabet: list[str], max_length: int) -> None:
        super().__init__(alphabet, max_length)
        # text -> SELFIES string (or failure reason) of the strings seen by fit(), so that the
        # encode() that follows in data preparation does not run the encoder twice (strings,
        # not token lists: a million token lists would take gigabytes)
        self._memo: dict[str, tuple[str | None, str]] = {}

    @classmethod
    def fit(cls, texts: list[str], max_length: int | None = None) -> "SelfiesCodec":
        """Vocabulary from the training SMILES; max_length = most tokens + 1 (the end)."""
        sf = _sf()
        memo = {t: smiles_to_selfies(t) for t in texts}
        alphabet: set[str] = set()
        longest = 0
        for encoded, _ in memo.values():
            if encoded is not None:
                toks = list(sf.split_selfies(encoded))
                alphabet.update(toks)
                longest = max(longest, len(toks))
        if not alphabet:
            raise ValueError(f"none of the {len(texts)} SMILES could be encoded as SELFIES")
        codec = cls(sorted(alphabet), max_length or longest + 1)
        codec._memo = memo
        return codec

    def tokens(self, text: str) -> tuple[list[str] | None, str]:
        """SELFIES tokens of ``text`` (memoised from :meth:`fit`) or ``(None, reason)``."""
        encoded, reason = self._memo.get(text) or smiles_to_selfies(text)
        return (None, reason) if encoded is None else (list(_sf().split_selfies(encoded)), "")

    def encode(self, texts: list[str], cache_dir: Path | None = None, workers: int = 1,
               progress: bool = True) -> EncodedTexts:
        """ids [N, max_length] (0 = end/padding); failures name the SMILES and the reason."""
        dtype = np.uint8 if self.vocab_size < 256 else np.int16
        ids = np.zeros((len(texts), self.max_length), dtype=dtype)
        kept: list[str] = []
        lengths: list[int] = []
        failures: list[tuple[int, str, str]] = []
        for i, text in enumerate(texts):
            toks, reason = self.tokens(text)
            if toks is None:
                failures.append((i, text, reason))
                continue
            unknown = [s for s in toks if s not in self.index]
            if unknown or len(toks) >= self.max_length:
                reason = (f"unknown SELFIES token {unknown[0]}" if unknown
                          else f"longer than {self.max_length - 1} SELFIES tokens")
                failures.append((i, text, reason))
                continue
            ids[len(kept), : len(toks)] = [self.index[s] for s in toks]
            kept.append(text)
            lengths.append(len(toks) + 1)
        self._memo = {}  # only the first encode after fit() benefits; free the memory
        return EncodedTexts(ids[: len(kept)], np.asarray(lengths, dtype=np.int32), kept, failures)

    def to_text(self, ids: Tensor, finished: Tensor) -> list[str | None]:
        """Canonical SMILES per row ("" = empty decode). Rows without an end token are decoded
        too: a truncated SELFIES string is still a molecule."""
        out: list[str | None] = []
        for row in ids.cpu().tolist():
            end = row.index(0) if 0 in row else len(row)
            out.append(tokens_to_smiles([self.alphabet[i] for i in row[:end]]))
        return out


CODECS["selfies"] = SelfiesCodec
