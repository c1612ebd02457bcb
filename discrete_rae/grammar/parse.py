"""Parsing many strings: :class:`ParseResult` and the (multi-process) batch parser."""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import GrammarError

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------------------
# Multiprocessing workers (module level so that they pickle)
# --------------------------------------------------------------------------------------

_WORKER_GRAMMAR: Any = None


def _worker_init(cls: type, state: dict[str, Any]) -> None:
    # the Grammar class is passed in (pickled by reference) so that this module need not import it
    global _WORKER_GRAMMAR
    _WORKER_GRAMMAR = cls.from_state_dict(state)


def _worker_parse(args: tuple[int, list[str]]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, list]:
    start, texts = args
    assert _WORKER_GRAMMAR is not None
    return (start,) + parse_chunk(_WORKER_GRAMMAR, texts, start)


def parse_chunk(g: Any, texts: Sequence[str], start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Parse ``texts`` (inputs ``start ...`` of the whole list) with grammar ``g``.

    Returns ``(flat ids, lengths [n_ok], input positions [n_ok], failures)`` as in :class:`ParseResult`.
    """
    dtype = g.ids_dtype
    flat: list[int] = []
    lengths: list[int] = []
    ok: list[int] = []
    failures: list[tuple[int, str, str]] = []
    parse = g.parse
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


def parse_many(
    g: Any,
    texts: Sequence[str],
    workers: int = 1,
    progress: bool = True,
    chunk_size: int = 2000,
) -> ParseResult:
    """Parse many strings with grammar ``g``; failures are collected, not raised.

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
    g._lr_tables()
    chunks = [(i, texts[i : i + chunk_size]) for i in range(0, n, chunk_size)]
    parts: list[tuple] = []
    bar = tqdm(total=n, disable=not progress, desc=f"parse {g.name}", unit="str")
    try:
        if workers <= 1 or len(chunks) <= 1:
            for start, chunk in chunks:
                parts.append((start,) + parse_chunk(g, chunk, start))
                bar.update(len(chunk))
        else:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(workers, initializer=_worker_init, initargs=(type(g), g.state_dict())) as pool:
                for part in pool.imap(_worker_parse, chunks):
                    parts.append(part)
                    bar.update(len(chunks[len(parts) - 1][1]))
    finally:
        bar.close()
    dtype = g.ids_dtype
    ids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=dtype)
    lengths = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, dtype=np.int32)
    ok_index = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    failures = [f for p in parts for f in p[4]]
    if failures:
        logger.info("grammar %s: %d of %d inputs did not parse", g.name, len(failures), n)
    return ParseResult(
        ids=ids.astype(dtype, copy=False),
        lengths=lengths,
        ok_index=ok_index,
        failures=failures,
        pad_index=g.pad_index,
        n_inputs=n,
    )
