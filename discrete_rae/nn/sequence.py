"""Encoders and decoders over token sequences (production rules or characters).

Shapes: ids [B, L] integer tokens; one-hot [B, L, V]; codes z [B, D]; logits [B, L, V].

Trimmed decoding (``trim_pad``): when the likelihood allows only the padding token at padding
positions (the grammar codec's training mask), those positions contribute log 1 = 0 to the loss
and no gradient, so the decoders run only up to the batch's longest sequence T <= L and pad
their logits back to L with zeros: the same loss per example, fewer recurrent steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..codecs import SequenceCodec
from ..grammar import select


class ConvSequenceEncoder(nn.Module):
    """The Grammar VAE encoder: 1-D convolutions over the one-hot sequence, then a dense layer.

    one-hot [B, L, V] -> Conv1d stack (ReLU) -> flatten -> Linear(hidden) -> ReLU -> h [B, hidden]
    Paper sizes (molecules): channels (9, 9, 10), kernels (9, 9, 11), hidden 435.
    """

    def __init__(self, vocab: int, length: int, channels: Sequence[int] = (9, 9, 10),
                 kernels: Sequence[int] = (9, 9, 11), hidden: int = 435) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, out_len = vocab, length
        for ch, k in zip(channels, kernels):
            k = min(k, out_len)  # short sequences (expressions, L=15) cannot take long kernels
            layers += [nn.Conv1d(in_ch, ch, k), nn.BatchNorm1d(ch), nn.ReLU()]
            in_ch, out_len = ch, out_len - k + 1
        self.vocab = vocab
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Linear(in_ch * out_len, hidden), nn.ReLU())
        self.out_dim = hidden

    def forward(self, ids: Tensor) -> Tensor:
        x = F.one_hot(ids.long(), self.vocab).to(self.dense[0].weight.dtype).transpose(1, 2)
        return self.dense(self.convs(x).flatten(1))


class GRUSequenceEncoder(nn.Module):
    """Bidirectional GRU over token embeddings; final states of both directions -> h [B, 2 hidden].

    ``reverse``: read the padded sequence flipped (padding first, the first token last), as
    MHG-VAE does. Why: the forward direction then ends on the first tokens, the ones the
    decoder must produce first, instead of on padding.

    ``cell`` "lstm": a bidirectional LSTM instead (final h of both directions); on the CPU it
    runs oneDNN's fused kernel, which nn.GRU lacks.
    """

    def __init__(self, vocab: int, length: int, hidden: int = 256, embed: int = 64, layers: int = 1,
                 reverse: bool = False, cell: str = "gru") -> None:
        super().__init__()
        if cell not in RNN_CELLS:
            raise ValueError(f"encoder cell {cell!r} is unknown; choose one of: {', '.join(RNN_CELLS)}")
        self.reverse = bool(reverse)
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = RNN_CELLS[cell](embed, hidden, layers, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden

    def forward(self, ids: Tensor) -> Tensor:
        ids = ids.long().flip(1) if self.reverse else ids.long()
        _, h = self.rnn(self.embed(ids))
        return self._final(h)

    @staticmethod
    def _final(h: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """Last layer's final states of both directions (LSTM: the h of its (h, c))."""
        h = h[0] if isinstance(h, tuple) else h
        return torch.cat([h[-2], h[-1]], dim=-1)


class TransformerSequenceEncoder(nn.Module):
    """Self-attention over token + learned position embeddings, mean-pooled -> h [B, hidden].

    ids [B, L] -> Embedding(hidden) + position [L, hidden] -> ``layers`` x nn.TransformerEncoderLayer
    (pre-norm, ``heads`` heads, feed-forward 2 hidden, GELU, no dropout) -> LayerNorm -> mean over
    the L positions. Padding positions are attended like any token (they tell the length) and no
    key mask is needed. Why offer it: every position is computed at once (large matrix products),
    where a recurrent encoder walks the L steps one after the other.
    """

    def __init__(self, vocab: int, length: int, hidden: int = 128, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"transformer encoder width {hidden} is not divisible by its {heads} heads")
        self.embed = nn.Embedding(vocab, hidden)
        self.position = nn.Parameter(torch.randn(length, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.out_dim = hidden

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids.long()) + self.position[: ids.shape[1]]
        return self.norm(self.blocks(x)).mean(dim=1)


def used_length(ids: Tensor, pad_index: int) -> int:
    """1 + the last position of ids [B, L] holding a non-padding token in any row (at least 1)."""
    used = (ids != pad_index).any(dim=0).nonzero()
    return int(used[-1, 0]) + 1 if len(used) else 1


def _pad_steps(logits: Tensor, length: int) -> Tensor:
    """Logits [B, T, V] -> [B, length, V], zeros after T (masked to the padding token in the loss)."""
    return logits if logits.shape[1] >= length else F.pad(logits, (0, 0, 0, length - logits.shape[1]))


class RepeatGRUDecoder(nn.Module):
    """The Grammar VAE decoder (non-autoregressive): the code is repeated at every step.

    z [B, D] -> Linear+ReLU -> repeated L times -> GRU stack -> Linear -> logits [B, L, V].
    Decoding masks the full logit tensor step by step with the codec (grammar stack).
    """

    autoregressive = False

    def __init__(self, code_dim: int, vocab: int, length: int, hidden: int = 501, layers: int = 3,
                 trim_pad: int | None = None) -> None:
        super().__init__()
        self.length, self.trim_pad = length, trim_pad
        self.inp = nn.Sequential(nn.Linear(code_dim, hidden), nn.ReLU())
        self.rnn = nn.GRU(hidden, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, z: Tensor, ids: Tensor | None = None) -> Tensor:
        steps = self.length if ids is None or self.trim_pad is None else used_length(ids, self.trim_pad)
        x = self.inp(z).unsqueeze(1).expand(-1, steps, -1)
        h, _ = self.rnn(x)
        return _pad_steps(self.out(h), self.length)

    @torch.no_grad()
    def generate(self, z: Tensor, codec: SequenceCodec, greedy: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return codec.decode_logits(self(z).float(), greedy, temperature, generator)


class AutoregressiveGRUDecoder(nn.Module):
    """GRU (or LSTM) fed the previous token and the code; teacher-forced in training.

    h_0 = tanh(W z) for each layer (LSTM: c_0 = 0); input_t = [embed(y_{t-1}), z];
    logits_t = W_o h_t. ``cell`` "lstm": on the CPU nn.LSTM runs a fused oneDNN kernel and
    nn.GRU does not, so an LSTM of the same width can take less time per step.
    Decoding masks each step with the codec (grammar stack), so the choice at t conditions
    the next step.

    ``word_dropout`` p: in training each previous token is replaced by a blank token with
    probability p (Bowman et al. 2016). Why: a teacher-forced GRU can predict most rules from
    its own history and learns to ignore the code early on; hiding part of the history makes
    the code the cheaper source of information.
    """

    autoregressive = True

    def __init__(self, code_dim: int, vocab: int, length: int, hidden: int = 256, layers: int = 1,
                 embed: int = 64, word_dropout: float = 0.0, cell: str = "gru", trim_pad: int | None = None) -> None:
        super().__init__()
        if cell not in RNN_CELLS:
            raise ValueError(f"decoder cell {cell!r} is unknown; choose one of: {', '.join(RNN_CELLS)}")
        self.length, self.vocab, self.layers, self.hidden = length, vocab, layers, hidden
        self.word_dropout = float(word_dropout)
        self.cell, self.trim_pad = cell, trim_pad
        # index `vocab` is the start token, `vocab + 1` the blank used by word dropout
        self.embed = nn.Embedding(vocab + 2, embed)
        self.init = nn.Linear(code_dim, layers * hidden)
        self.rnn = RNN_CELLS[cell](embed + code_dim, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def _h0(self, z: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        h = torch.tanh(self.init(z)).view(z.shape[0], self.layers, self.hidden).transpose(0, 1).contiguous()
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def forward(self, z: Tensor, ids: Tensor) -> Tensor:
        if self.trim_pad is not None:
            ids = ids[:, :used_length(ids, self.trim_pad)]
        start = torch.full_like(ids[:, :1], self.vocab, dtype=torch.long)
        prev = torch.cat([start, ids[:, :-1].long()], dim=1)
        if self.training and self.word_dropout > 0:
            blank = torch.rand(prev.shape, device=prev.device) < self.word_dropout
            prev = prev.masked_fill(blank, self.vocab + 1)
        x = torch.cat([self.embed(prev), z.unsqueeze(1).expand(-1, prev.shape[1], -1)], dim=-1)
        h, _ = self.rnn(x, self._h0(z))
        return _pad_steps(self.out(h), self.length)

    def step(self, z: Tensor, prev: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """One decoding step: code z [B, D], previous tokens prev [B] (``vocab`` = start),
        hidden h [layers, B, hidden] -> (logits [B, V], next h). Shared by greedy/sampled
        decoding and beam search; h starts at ``_h0(z)``."""
        x = torch.cat([self.embed(prev), z], dim=-1).unsqueeze(1)
        out, h = self.rnn(x, h)
        return self.out(out[:, 0]), h

    @torch.no_grad()
    def generate(self, z: Tensor, codec: SequenceCodec, greedy: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        state = codec.new_state(z.shape[0], z.device)
        h = self._h0(z)
        prev = torch.full((z.shape[0],), self.vocab, dtype=torch.long, device=z.device)
        for _ in range(self.length):
            logits, h = self.step(z, prev, h)
            prev = select(logits.float(), state.allowed(), greedy, temperature, generator)
            state.push(prev)
            if bool(state.done.all()):
                break
        ids = state.ids
        if ids.shape[1] < self.length:  # every row finished early: pad to the full length
            ids = F.pad(ids, (0, self.length - ids.shape[1]), value=codec.pad_index)
        return ids, state.done


RNN_CELLS: dict[str, Any] = {"gru": nn.GRU, "lstm": nn.LSTM}
ENCODERS: dict[str, Any] = {"conv": ConvSequenceEncoder, "gru": GRUSequenceEncoder,
                            "transformer": TransformerSequenceEncoder}
DECODERS: dict[str, Any] = {"gru": AutoregressiveGRUDecoder, "repeat": RepeatGRUDecoder}
