"""Encoder: the first layers of WavLM (conv feature extractor, conv positional embedding,
pre-LN transformer with gated relative position bias).

``sig: (B, N) float at 16 kHz -> feats: (B, T, dim)`` at 50 Hz, with
non-causal ``T = floor((N - 400) / 320) + 1`` and causal ``T = ceil(N / 320)``.

The causal variant uses left-context convolutions (replicate padding at stream start) and
chunked attention: chunks of ``1 + lookahead`` frames aligned to absolute frame indices, each
frame seeing its own chunk and the past within ``window_size`` frames. Its streaming state
(``EncoderState``) holds the absolute frame count, the conv contexts and a key/value cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import CausalPad, FeedForward, conv_time_major, zero_padded_frames

__all__ = ["WavLM", "relative_position_bucket"]

# State layout (a plain nested list so that it stays opaque, picklable and scriptable-friendly):
#   [frames_seen (0-dim int64), conv_contexts (list of 8 tensors), kv_caches (list per layer)]
EncoderState = list


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
        self.kernel_size = kernel_size
        self.causal = causal
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, stride, bias=False)
        self.norm = nn.LayerNorm(out_dim)
        self.activation = nn.GELU()
        self.pad = CausalPad(kernel_size - 1 if causal else 0)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        new_context = None
        right = 0
        if self.causal:
            x, new_context = self.pad(x, context)
        elif x.shape[1] < self.kernel_size:
            right = self.kernel_size - x.shape[1]
        x = conv_time_major(x, self.conv, (0, right))
        return self.activation(self.norm(x)), new_context


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

    def forward(self, sig: Tensor, contexts: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        if sig.device.type == "cpu" and sig.shape[0] > 1 and sig.shape[1] > 64000 and not torch.jit.is_tracing():
            # On CPU the large early activations of a batch fall out of cache: run items one
            # by one (same numbers, about a third less time per item for 10 s inputs).
            parts = [
                self(sig[i : i + 1], None if contexts is None else [c[i : i + 1] for c in contexts])
                for i in range(sig.shape[0])
            ]
            return torch.cat([p[0] for p in parts]), [torch.cat(cs) for cs in zip(*[p[1] for p in parts], strict=False)]
        x = sig[:, :, None]
        new_contexts = []
        for i, layer in enumerate(self.layers):
            x, ctx = layer(x, None if contexts is None else contexts[i])
            if ctx is not None:
                new_contexts.append(ctx)
        return x, new_contexts


class PositionalEmbedding(nn.Module):
    """Grouped conv positional embedding followed by GELU; ``(B, T, C) -> (B, T, C)``.

    Non-causal: ``kernel // 2`` zeros on both sides and the last output dropped (even kernel).
    Causal: ``kernel - 1`` frames of left context.
    """

    def __init__(self, dim: int, kernel_size: int, groups: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=groups)
        self.activation = nn.GELU()
        self.pad = CausalPad(kernel_size - 1 if causal else 0)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        new_context = None
        if self.causal:
            x, new_context = self.pad(x, context)
            x = conv_time_major(x, self.conv)
        else:
            half = self.kernel_size // 2
            # An even kernel gives one extra output frame, which is dropped: pad one less on the right.
            x = conv_time_major(x, self.conv, (half, half - 1 + self.kernel_size % 2))
        return self.activation(x), new_context


class SelfAttention(nn.Module):
    """Multi-head self-attention with WavLM's gated relative position bias.

    ``x: (B, T, C)`` (the LayerNorm output), ``keys``/``values``: (B, H, S, d) already projected
    (cache plus new frames), ``bias: (H, T, S)``, ``mask: (B or 1, 1, T, S)`` additive.
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

    def forward(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None) -> Tensor:
        attn_bias = self.gate(x) * bias[None]
        if mask is not None:
            attn_bias = attn_bias + mask
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )
        B, H, T, d = out.shape
        return self.out_proj(out.transpose(1, 2).contiguous().flatten(2))


class TransformerLayer(nn.Module):
    """Pre-LN layer: ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, num_heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, bias: Tensor, mask: Tensor | None, cache: Tensor | None, keep: int
    ) -> tuple[Tensor, Tensor | None]:
        """``cache: (2, B, H, P, d)`` past keys/values; returns the last ``keep`` of them (or None)."""
        xn = self.attention_norm(x)
        q, k, v = self.attention.project(xn)
        k, v, new_cache = self.join_cache(cache, k, v, keep)
        x = x + self.dropout(self.attention(xn, q, k, v, bias, mask))
        x = x + self.feed_forward(self.feed_forward_norm(x))
        return x, new_cache

    def join_cache(self, cache: Tensor | None, k: Tensor, v: Tensor, keep: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Past keys/values ``cache (2, B, H, P, d)`` (or None) and the new ``k, v (B, H, T, d)``
        -> the keys and values to attend to ``(B, H, P + T, d)`` and the next cache: the last
        ``keep`` of them (None when ``keep == 0``)."""
        if cache is not None and cache.shape[3] > 0:
            # One copy per call: the new cache is a view of the joined keys/values.
            kv = torch.cat([cache.to(k.dtype), torch.stack([k, v])], dim=3)
            return kv[0], kv[1], (kv[:, :, :, -keep:] if keep > 0 else None)
        return k, v, (torch.stack([k[:, :, -keep:], v[:, :, -keep:]]) if keep > 0 else None)


class TransformerEncoder(nn.Module):
    """Positional conv, shared relative embedding and the transformer layers."""

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
    ) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.positional_embedding = PositionalEmbedding(dim, conv_pos, conv_pos_groups, causal)
        self.relative_embedding = nn.Embedding(num_buckets, num_heads)
        self.layers = nn.ModuleList(TransformerLayer(dim, ffn_dim, num_heads, dropout) for _ in range(num_layers))

    def position_bias(self, num_queries: int, num_past: int, device: torch.device) -> Tensor:
        """Bias ``(H, T, P + T)`` for ``T`` queries following ``P`` cached keys.

        Depends only on ``key - query`` offsets, looked up in a 1-D table of them."""
        span = num_past + 2 * num_queries - 1
        offsets = torch.arange(span, device=device) - (num_past + num_queries - 1)
        table = self.relative_embedding(relative_position_bucket(offsets, self.num_buckets, self.max_distance))
        index = (
            torch.arange(num_past + num_queries, device=device)[None, :]
            - torch.arange(num_queries, device=device)[:, None]
        )
        return table[index + (num_queries - 1)].permute(2, 0, 1)


class WavLM(nn.Module):
    """The WavLM encoder (see module docstring). Keys match the official checkpoints."""

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
            dim, ffn_dim, num_layers, num_heads, num_buckets, max_distance, conv_pos, conv_pos_groups, dropout, causal
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

    # -- attention masks ---------------------------------------------------------------------
    def _causal_mask(self, start: int, num_past: int, num_new: int, device: torch.device) -> Tensor | None:
        """Additive ``(1, 1, n, P + n)`` chunked-window mask, or None when nothing is masked."""
        if num_new <= self.chunk_frames:
            return None
        q_abs = start + torch.arange(num_new, device=device)
        k_abs = start - num_past + torch.arange(num_past + num_new, device=device)
        end = torch.div(q_abs + self.chunk_frames, self.chunk_frames, rounding_mode="floor") * self.chunk_frames
        end = end.clamp(max=start + num_new)
        allowed = (k_abs[None, :] < end[:, None]) & (k_abs[None, :] >= end[:, None] - self.window_size)
        return torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))[None, None]

    def forward(
        self,
        sig: Tensor,
        state: EncoderState | None = None,
        length: Tensor | None = None,
        frame_lengths: Tensor | None = None,
        past_lengths: Tensor | None = None,
    ) -> tuple[Tensor, EncoderState | None]:
        """``sig: (B, N) -> feats: (B, T, dim)`` and the new state (causal) or None.

        ``length``: the reference's relative lengths in [0, 1] (non-causal only): frames past
        ``ceil(length * T)`` are zeroed before the positional conv and masked as keys.
        ``frame_lengths``: exact valid frames per item (int, (B,)): the same masking, used by the
        batch-invariant path. At most one of the two is given.
        ``past_lengths``: valid cached frames per item (int, (B,); causal state only), the most
        recent ones: older slots of the key/value cache are masked as keys. Lets a fixed-size
        cache (the exported stream steps of :mod:`focalcodec.stream_step`) start empty.
        """
        if state is not None and len(state) == 0:
            state = None
        if state is not None and not self.causal:
            raise ValueError("streaming state given to a non-causal encoder")
        contexts = None if state is None else state[1]
        x, new_contexts = self.feature_extractor(sig, None if contexts is None else contexts[:-1])
        x = self.dropout(self.feature_proj(self.norm(x)))
        B, T, _ = x.shape

        if self.causal and length is not None:
            length = None  # the causal reference ignores relative lengths
        if length is not None:
            frame_lengths = torch.ceil(length.to(torch.float32) * T).long()
        x = zero_padded_frames(x, frame_lengths)

        pos, pos_context = self.encoder.positional_embedding(x, None if contexts is None else contexts[-1])
        x = x + pos

        if self.causal:
            start = 0 if state is None else int(state[0])
            caches = None if state is None else state[2]
            num_past = 0 if caches is None else int(caches[0].shape[3])
            mask = self._causal_mask(start, num_past, T, x.device)
            keep = min(self.window_size - self.chunk_frames, num_past + T)
        else:
            start, caches, num_past, mask, keep = 0, None, 0, None, 0
        key_ok: Tensor | None = None
        if frame_lengths is not None or past_lengths is not None:  # key slots, only when masked
            slots = torch.arange(num_past + T, device=x.device)[None, :]
        if frame_lengths is not None:
            key_ok = slots < (num_past + frame_lengths)[:, None]
        if past_lengths is not None and num_past > 0:
            past_ok = slots >= (num_past - past_lengths.to(x.device))[:, None]
            key_ok = past_ok if key_ok is None else key_ok & past_ok
        if key_ok is not None:
            key_mask = torch.zeros(key_ok.shape, device=x.device).masked_fill(~key_ok, float("-inf"))[:, None, None]
            mask = key_mask if mask is None else mask + key_mask

        bias = self.encoder.position_bias(T, num_past, x.device)
        new_caches = []
        for i, layer in enumerate(self.encoder.layers):
            x, cache = layer(x, bias, mask, None if caches is None else caches[i], keep)
            new_caches.append(cache)

        if not self.causal:
            return x, None
        new_state = [torch.tensor(start + T), new_contexts + [pos_context], new_caches]
        return x, new_state
