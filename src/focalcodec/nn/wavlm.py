"""Encoder: the first layers of WavLM (conv feature extractor, conv positional embedding,
pre-LN transformer with gated relative position bias).

``sig: (B, N) float at 16 kHz -> feats: (B, T, dim)`` at 50 Hz, with
non-causal ``T = floor((N - 400) / 320) + 1`` and causal ``T = ceil(N / 320)``.

The causal variant uses left-context convolutions (replicate padding at the start) and
chunked attention: chunks of ``1 + lookahead`` frames aligned to frame indices, each frame
seeing its own chunk and the past within ``window_size`` frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Conv, FeedForward, zero_padded_frames

__all__ = ["WavLM", "relative_position_bucket"]


def relative_position_bucket(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Bidirectional T5 bucketing of ``key - query`` offsets (int64 in, int64 out)."""
    half = num_buckets // 2
    max_exact = half // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    scaled = torch.log(distance.clamp(min=1).float() / max_exact)
    scaled = scaled / math.log(max_distance / max_exact) * (half - max_exact)
    large = (max_exact + scaled.long()).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class ConvBlock(nn.Module):
    """Conv1d (no bias) -> LayerNorm over channels -> GELU; ``(B, N, C_in) -> (B, N', C_out)``."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, stride: int, causal: bool) -> None:
        super().__init__()
        self.conv = Conv(in_dim, out_dim, kernel_size, stride, bias=False, padding="causal" if causal else "valid")
        self.norm = nn.LayerNorm(out_dim)
        self.activation = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, N, C_in) -> (B, N', C_out)``."""
        return self.activation(self.norm(self.conv(x)))


class FeatureExtractor(nn.Module):
    """Seven strided conv blocks: ``(B, N) -> (B, T, hidden_dims[-1])``."""

    def __init__(
        self, hidden_dims: Sequence[int], kernel_sizes: Sequence[int], strides: Sequence[int], causal: bool
    ) -> None:
        super().__init__()
        in_dims = [1] + list(hidden_dims[:-1])
        self.layers = nn.ModuleList(
            ConvBlock(i, o, k, s, causal)
            for i, o, k, s in zip(in_dims, hidden_dims, kernel_sizes, strides, strict=False)
        )

    def forward(self, sig: Tensor) -> Tensor:
        """``sig (B, N) -> (B, T, hidden_dims[-1])``."""
        if sig.device.type == "cpu" and sig.shape[0] > 1 and sig.shape[1] > 64000 and not torch.jit.is_tracing():
            # On CPU the large early activations of a batch fall out of cache: run items one
            # by one (same numbers, about a third less time per item for 10 s inputs).
            return torch.cat([self(sig[i : i + 1]) for i in range(sig.shape[0])])
        x = sig[:, :, None]
        for layer in self.layers:
            x = layer(x)
        return x


class PositionalEmbedding(nn.Module):
    """Grouped conv positional embedding followed by GELU; ``(B, T, C) -> (B, T, C)``.

    Non-causal: ``kernel // 2`` zeros on both sides and the last output dropped (even kernel).
    Causal: ``kernel - 1`` frames of left context.
    """

    def __init__(self, dim: int, kernel_size: int, groups: int, causal: bool) -> None:
        super().__init__()
        # Non-causal: an even kernel gives one extra output frame, which is dropped (one less on the right).
        padding = "causal" if causal else (kernel_size // 2, kernel_size - 1 - kernel_size // 2)
        self.conv = Conv(dim, dim, kernel_size, groups=groups, padding=padding)
        self.activation = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, T, C) -> (B, T, C)``."""
        return self.activation(self.conv(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with WavLM's gated relative position bias.

    ``forward(x, bias, mask)``: ``x: (B, T, C)`` (the LayerNorm output), ``bias: ([B,] H, T, T)``,
    ``mask: (B or 1, 1, T, T)`` additive or None -> ``(B, T, C)``. :meth:`project` and
    :meth:`attend` are its two halves (queries may attend to other keys than their own frames').
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        self.dropout = dropout

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, T, C) -> q, k, v`` each ``(B, H, T, d)``."""
        B, T, _ = x.shape
        q, k, v = self.qkv_proj(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def gate(self, x: Tensor) -> Tensor:
        """Per-query bias gate from the normalised input: ``(B, T, C) -> (B, H, T, 1)``."""
        B, T, _ = x.shape
        heads = x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        ab = torch.sigmoid(self.gru_rel_pos_linear(heads).view(B, self.num_heads, T, 2, 4).sum(-1))
        gate_a, gate_b = ab[..., 0:1], ab[..., 1:2]
        return gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0

    def forward(self, x: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        """``x (B, T, C)``, ``bias ([B,] H, T, T)``, ``mask (B or 1, 1, T, T)`` additive or None ``-> (B, T, C)``."""
        return self.attend(x, *self.project(x), bias, mask)

    def attend(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        """``q (B, H, T, d)`` over keys/values ``(B, H, S, d)`` with ``bias ([B,] H, T, S)`` and
        ``mask (B or 1, 1, T or 1, S)``; ``x`` is the queries' LayerNorm output (for the gate)."""
        attn_bias = self.gate(x) * bias
        if mask is not None:
            attn_bias = attn_bias + mask
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )
        B, H, T, d = out.shape
        return self.out_proj(out.transpose(1, 2).contiguous().flatten(2))


class TransformerLayer(nn.Module):
    """Pre-LN layer: ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``; ``(B, T, C) -> (B, T, C)``."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, num_heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        """``x (B, T, C)``, ``bias ([B,] H, T, T)``, ``mask (B or 1, 1, T, T)`` additive or None ``-> (B, T, C)``."""
        x = x + self.dropout(self.attention(self.attention_norm(x), bias, mask))
        return x + self.feed_forward(self.feed_forward_norm(x))


class TransformerEncoder(nn.Module):
    """Positional conv, shared relative embedding and the transformer layers:
    ``(B, T, dim) -> (B, T, dim)``. Causal: attention in chunks of ``chunk_frames`` frames
    aligned to frame 0, each frame seeing its chunk and the past within ``window_size`` frames.
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_layers: int,
        num_heads: int,
        num_buckets: int,
        max_distance: int,
        conv_pos: int,
        conv_pos_groups: int,
        dropout: float,
        causal: bool,
        window_size: int,
        chunk_frames: int,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.window_size = window_size
        self.chunk_frames = chunk_frames
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.positional_embedding = PositionalEmbedding(dim, conv_pos, conv_pos_groups, causal)
        self.relative_embedding = nn.Embedding(num_buckets, num_heads)
        self.layers = nn.ModuleList(TransformerLayer(dim, ffn_dim, num_heads, dropout) for _ in range(num_layers))

    def offset_bias(self, offsets: Tensor) -> Tensor:
        """Relative position bias of ``key - query`` offsets: ``(...) int64 -> (..., H)``."""
        return self.relative_embedding(relative_position_bucket(offsets, self.num_buckets, self.max_distance))

    def forward(self, x: Tensor, frame_lengths: Tensor | None = None) -> Tensor:
        """``frame_lengths (B,)``: valid frames per item; later frames are masked as keys."""
        x = x + self.positional_embedding(x)
        B, T, _ = x.shape
        steps = torch.arange(T, device=x.device)
        table = self.offset_bias(torch.arange(1 - T, T, device=x.device))  # (2T - 1, H)
        bias = table[steps[None, :] - steps[:, None] + T - 1].permute(2, 0, 1)  # (H, T, T)
        allowed = None
        if self.causal and T > self.chunk_frames:
            # a frame sees the keys in [end - window_size, end), end = its chunk's end capped at T
            end = ((torch.div(steps, self.chunk_frames, rounding_mode="floor") + 1) * self.chunk_frames).clamp(max=T)
            allowed = (steps[None, :] < end[:, None]) & (steps[None, :] >= end[:, None] - self.window_size)
            allowed = allowed[None]
        if frame_lengths is not None:
            keys = (steps[None, :] < frame_lengths[:, None])[:, None, :]
            allowed = keys if allowed is None else allowed & keys
        mask = None
        if allowed is not None:
            mask = torch.zeros(allowed.shape, device=x.device).masked_fill(~allowed, float("-inf"))[:, None]
        for layer in self.layers:
            x = layer(x, bias, mask)
        return x


class WavLM(nn.Module):
    """The WavLM encoder (see module docstring): ``sig (B, N)`` at 16 kHz ``-> feats (B, T, dim)`` at 50 Hz.
    Keys match the official checkpoints."""

    def __init__(
        self,
        hidden_dims: Sequence[int] = (512,) * 7,
        kernel_sizes: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
        strides: Sequence[int] = (5, 2, 2, 2, 2, 2, 2),
        num_layers: int = 6,
        dim: int = 1024,
        ffn_dim: int = 4096,
        num_heads: int = 16,
        num_buckets: int = 320,
        max_distance: int = 800,
        dropout: float = 0.0,
        conv_pos: int = 128,
        conv_pos_groups: int = 16,
        max_cached_steps: int = 2048,
        causal: bool = False,
        window_size: int = 512,
        lookahead_size: int = 3,
        use_flex_attention: bool = False,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.dim = dim
        self.window_size = window_size
        self.chunk_frames = 1 + lookahead_size
        self.kernel_sizes = list(kernel_sizes)
        self.strides = list(strides)
        self.downsample_factor = math.prod(strides)
        self.receptive_field = 1
        for k, s in zip(reversed(self.kernel_sizes), reversed(self.strides), strict=False):
            self.receptive_field = (self.receptive_field - 1) * s + k
        # Samples per streaming chunk (1280 for the official configs).
        self.chunk_size = self.downsample_factor * self.chunk_frames
        self.feature_extractor = FeatureExtractor(hidden_dims, kernel_sizes, strides, causal)
        self.norm = nn.LayerNorm(hidden_dims[-1])
        self.feature_proj = nn.Linear(hidden_dims[-1], dim)
        self.dropout = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(
            dim,
            ffn_dim,
            num_layers,
            num_heads,
            num_buckets,
            max_distance,
            conv_pos,
            conv_pos_groups,
            dropout,
            causal,
            window_size,
            self.chunk_frames,
        )

    # -- length bookkeeping ------------------------------------------------------------------
    def num_frames(self, num_samples: Tensor) -> Tensor:
        """Frames produced for inputs of ``num_samples`` samples (int tensor, any shape)."""
        n = num_samples.long()
        for k, s in zip(self.kernel_sizes, self.strides, strict=False):
            if self.causal:
                n = torch.div(n - 1, s, rounding_mode="floor") + 1
            else:
                n = torch.div(n.clamp(min=k) - k, s, rounding_mode="floor") + 1
        return n

    def forward(self, sig: Tensor, length: Tensor | None = None, frame_lengths: Tensor | None = None) -> Tensor:
        """``sig: (B, N) -> feats: (B, T, dim)``.

        ``length``: the reference's relative lengths in [0, 1] (non-causal only; the causal
        reference ignores them): frames past ``ceil(length * T)`` are zeroed before the
        positional conv and masked as keys. ``frame_lengths``: exact valid frames per item
        (int, (B,)): the same masking, used by the batch-invariant path. At most one is given.
        """
        x = self.dropout(self.feature_proj(self.norm(self.feature_extractor(sig))))
        if length is not None and not self.causal:
            frame_lengths = torch.ceil(length.to(torch.float32) * x.shape[1]).long()
        return self.encoder(zero_padded_frames(x, frame_lengths), frame_lengths)
