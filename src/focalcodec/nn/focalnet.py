"""Compressor and decompressor: focal-modulation blocks with down/up-scaling.

``FocalCompressor``: ``feats: (B, T, C_in) -> raw latents (B, T', D)`` (three FocalDownScale
layers then ``out_proj``). ``FocalDecompressor``: ``codes: (B, T', D) -> qfeats (B, T'', C_out)``
(``in_proj``, three FocalUpScale layers, and the chunk refiner of causal models).

Non-causal models use LayerNorm, "same" depthwise convs and a global mean context; causal
models use DynamicTanh, left-context convs (replicate padding at the start) and a
``window_size``-tap causal depthwise conv as global context.

Every ``forward`` takes optional ``lengths`` (valid frames per item) for exact batch invariance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Conv, DynamicTanh, FeedForward, FrameConvTranspose, Snake, in_float32, time_mask, zero_padded_frames

__all__ = ["FocalCompressor", "FocalDecompressor"]


class FocalModulation(nn.Module):
    """Focal modulation over time; ``(B, T, C) -> (B, T, C)``."""

    def __init__(
        self,
        dim: int,
        focal_window: int,
        focal_level: int,
        focal_factor: int,
        dropout: float,
        normalize_modulator: bool,
        causal: bool,
        window_size: int,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.focal_level = focal_level
        self.causal = causal
        self.normalize_modulator = normalize_modulator
        self.in_proj = nn.Linear(dim, 2 * dim + focal_level + 1)
        kernels = [focal_factor * level + focal_window for level in range(focal_level)]
        if causal:
            kernels.append(window_size)
        self.kernel_sizes = kernels
        padding = "causal" if causal else "same"
        self.layers = nn.ModuleList(
            nn.Sequential(Conv(dim, dim, k, groups=dim, padding=padding), nn.GELU()) for k in kernels
        )
        self.activation = nn.GELU()
        self.context_proj = Conv(dim, dim, 1)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, C) -> (B, T, C)``; ``lengths (B,)``: valid frames per item (a padded item gets what it gets
        alone)."""
        q, ctx, gates = self.in_proj(x).split([self.dim, self.dim, self.focal_level + 1], dim=-1)
        acc = 0.0
        for level, (conv, activation) in enumerate(self.layers):
            ctx = activation(conv(ctx, lengths))
            acc = acc + ctx * gates[..., level : level + 1]
        if not self.causal:
            if lengths is None:
                pooled = ctx.mean(dim=1, keepdim=True)
            else:
                valid = time_mask(lengths, ctx.shape[1])[:, :, None]
                pooled = (ctx * valid).sum(dim=1, keepdim=True) / lengths.clamp(min=1)[:, None, None]
            acc = acc + self.activation(pooled) * gates[..., self.focal_level :]
        if self.normalize_modulator:
            acc = acc / (self.focal_level + 1)
        return self.dropout(self.out_proj(q * self.context_proj(acc)))


class FocalBlock(nn.Module):
    """Pre-norm block: ``x + Mod(Norm(x))`` then ``x + FFN(Norm(x))``; ``(B, T, C) -> (B, T, C)``."""

    def __init__(
        self,
        dim: int,
        focal_window: int,
        focal_level: int,
        focal_factor: int,
        dropout: float,
        use_post_norm: bool,
        use_layerscale: bool,
        layerscale_init: float,
        tanhscale_init: float,
        normalize_modulator: bool,
        causal: bool,
        window_size: int,
    ) -> None:
        super().__init__()
        if use_post_norm:
            raise ValueError("use_post_norm=True is not used by any FocalCodec model and is not supported")

        def norm() -> nn.Module:
            return DynamicTanh(tanhscale_init) if causal else nn.LayerNorm(dim)

        self.modulation_norm = norm()
        self.modulation = FocalModulation(
            dim, focal_window, focal_level, focal_factor, dropout, normalize_modulator, causal, window_size
        )
        self.feed_forward_norm = norm()
        self.feed_forward = FeedForward(dim, 4 * dim, dropout)
        if use_layerscale:
            self.modulation_gamma = nn.Parameter(torch.full((dim,), float(layerscale_init)))
            self.feed_forward_gamma = nn.Parameter(torch.full((dim,), float(layerscale_init)))
        else:
            self.modulation_gamma = None
            self.feed_forward_gamma = None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, C) -> (B, T, C)``; ``lengths (B,)``: valid frames per item (a padded item gets what it gets
        alone)."""
        y = self.modulation(self.modulation_norm(x), lengths)
        if self.modulation_gamma is not None:
            y = y * self.modulation_gamma
        x = x + y
        y = self.feed_forward(self.feed_forward_norm(x))
        if self.feed_forward_gamma is not None:
            y = y * self.feed_forward_gamma
        return x + y


class DownScale(nn.Module):
    """Strided conv (kernel = stride = factor) then Snake; ``(B, T, C_in) -> (B, T', C)``.

    Non-causal: right zero-pad by ``(T - f) mod f`` (as the reference). Causal: ``f - 1``
    frames of left context.
    """

    def __init__(self, in_dim: int, out_dim: int, factor: int, causal: bool) -> None:
        super().__init__()
        self.factor = factor
        self.causal = causal
        # Non-causal: the reference right-pads by (T - f) mod f. For f <= 2 that is the same as
        # padding by f - 1, which keeps exported graphs shape-independent; larger f crop after.
        self.downscale = Conv(in_dim, out_dim, factor, factor, padding="causal" if causal else (0, factor - 1))
        self.activation = Snake(out_dim)

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Output frames for ``lengths`` input frames (int64 tensor, any shape)."""
        f = self.factor
        if self.causal:
            return torch.div(lengths - 1, f, rounding_mode="floor") + 1
        padded = lengths + torch.remainder(lengths - f, f)
        return torch.div(padded - f, f, rounding_mode="floor") + 1

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, C_in) -> (B, num_frames(T), C)``; ``lengths (B,)``: valid frames per item (a padded item gets
        what it gets alone)."""
        y = self.downscale(x, lengths)
        f, T = self.factor, x.shape[1]
        if f > 2 and not self.causal:
            y = y[:, : (T + (T - f) % f - f) // f + 1]
        return self.activation(y)


class UpScale(nn.Module):
    """Snake then transposed conv (kernel = stride = factor); ``(B, T, C) -> (B, T*u, C_out)``.

    With kernel = stride each input frame makes its own ``u`` output frames, so the layer is
    a per-frame linear map and needs no context, causal or not.
    """

    def __init__(self, in_dim: int, out_dim: int, factor: int, causal: bool) -> None:
        super().__init__()
        self.factor = factor
        self.causal = causal
        self.activation = Snake(in_dim)
        self.upscale = FrameConvTranspose(in_dim, out_dim, factor)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, T, C) -> (B, T * factor, C_out)``."""
        return self.upscale(self.activation(x))


class FocalDownScale(nn.Module):
    """DownScale then FocalBlock: ``(B, T, C_in) -> (B, T', C)``."""

    def __init__(self, in_dim: int, out_dim: int, factor: int, **block: object) -> None:
        super().__init__()
        self.downscale = DownScale(in_dim, out_dim, factor, bool(block["causal"]))
        self.focal_block = FocalBlock(out_dim, **block)  # type: ignore[arg-type]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``x (B, T, C_in), lengths (B,) or None -> (B, T', C)`` and the output's lengths."""
        x = self.downscale(x, lengths)
        if lengths is not None:
            lengths = self.downscale.num_frames(lengths)
        return self.focal_block(x, lengths), lengths


class FocalUpScale(nn.Module):
    """FocalBlock then UpScale: ``(B, T, C_in) -> (B, T * factor, C_out)``."""

    def __init__(self, in_dim: int, out_dim: int, factor: int, **block: object) -> None:
        super().__init__()
        self.focal_block = FocalBlock(in_dim, **block)  # type: ignore[arg-type]
        self.upscale = UpScale(in_dim, out_dim, factor, bool(block["causal"]))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``x (B, T, C_in), lengths (B,) or None -> (B, T * factor, C_out)`` and ``lengths * factor``."""
        x = self.upscale(self.focal_block(x, lengths))
        return x, (None if lengths is None else lengths * self.upscale.factor)


class ChunkRefiner(nn.Module):
    """Residual MLP over non-overlapping blocks of ``chunk`` frames, aligned to the call start.

    ``(B, T, C) -> (B, T, C)``; a trailing partial block is zero-padded.
    """

    def __init__(self, chunk: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.chunk = chunk
        width = chunk * dim
        self.in_proj = nn.Linear(width, width)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, C) -> (B, T, C)``; frames at or past ``lengths (B,)`` are zeroed first."""
        B, T, C = x.shape
        x = zero_padded_frames(x, lengths)
        pad = (-T) % self.chunk
        blocks = F.pad(x, (0, 0, 0, pad)).reshape(B, (T + pad) // self.chunk, self.chunk * C)
        y = self.dropout(self.out_proj(self.dropout(self.activation(self.in_proj(blocks)))))
        return x + y.reshape(B, T + pad, C)[:, :T]


def _block_kwargs(cfg: dict, window_size: int) -> dict:
    return dict(
        focal_window=cfg["focal_window"],
        focal_level=cfg["focal_level"],
        focal_factor=cfg["focal_factor"],
        dropout=cfg["dropout"],
        use_post_norm=cfg["use_post_norm"],
        use_layerscale=cfg["use_layerscale"],
        layerscale_init=cfg["layerscale_init"],
        tanhscale_init=cfg["tanhscale_init"],
        normalize_modulator=cfg["normalize_modulator"],
        causal=cfg["causal"],
        window_size=window_size,
    )


class FocalCompressor(nn.Module):
    """Compressor: ``(B, T, input_dim) -> (B, T', output_dim)`` (not yet L2-normalised)."""

    def __init__(
        self,
        input_dim: int = 1024,
        output_dim: int = 12,
        hidden_dims: Sequence[int] = (1024, 1024, 1024),
        downscale_factors: Sequence[int] = (1, 1, 1),
        focal_window: int = 14,
        focal_level: int = 2,
        focal_factor: int = 4,
        dropout: float = 0.0,
        use_post_norm: bool = False,
        use_layerscale: bool = False,
        layerscale_init: float = 1e-4,
        tanhscale_init: float = 0.5,
        normalize_modulator: bool = False,
        causal: bool = False,
        window_size: int = 512,
    ) -> None:
        super().__init__()
        if len(hidden_dims) != len(downscale_factors):
            raise ValueError("compressor hidden_dims and downscale_factors must have the same length")
        cfg = dict(locals())
        self.causal = causal
        self.downsample_factor = 1
        for f in downscale_factors:
            self.downsample_factor *= f
        self.layers = nn.ModuleList()
        in_dim = input_dim
        for dim, factor in zip(hidden_dims, downscale_factors, strict=False):
            self.layers.append(FocalDownScale(in_dim, dim, factor, **_block_kwargs(cfg, window_size)))
            in_dim = dim
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(in_dim, output_dim)

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Latent frames ``T'`` for ``lengths`` feature frames (int64 tensor, any shape)."""
        for layer in self.layers:
            lengths = layer.downscale.num_frames(lengths)
        return lengths

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``feats (B, T, input_dim) -> (B, T', output_dim)`` raw latents (float32 under autocast);
        ``lengths (B,)``: valid frames per item (a padded item gets what it gets alone)."""
        for layer in self.layers:
            x, lengths = layer(x, lengths)
        return in_float32(self.out_proj, self.dropout(x))  # the tokens are its signs


class FocalDecompressor(nn.Module):
    """Decompressor: ``(B, T', input_dim) -> (B, T'', output_dim)``, plus the causal refiner."""

    def __init__(
        self,
        input_dim: int = 12,
        output_dim: int = 1024,
        hidden_dims: Sequence[int] = (1024, 1024, 1024),
        upscale_factors: Sequence[int] = (1, 1, 1),
        focal_window: int = 14,
        focal_level: int = 2,
        focal_factor: int = 4,
        dropout: float = 0.0,
        use_post_norm: bool = False,
        use_layerscale: bool = False,
        layerscale_init: float = 1e-4,
        tanhscale_init: float = 0.5,
        normalize_modulator: bool = False,
        causal: bool = False,
        window_size: int = 512,
        last_window_size: int = 512,
        lookahead_size: int = 3,
    ) -> None:
        super().__init__()
        if len(hidden_dims) != len(upscale_factors):
            raise ValueError("decompressor hidden_dims and upscale_factors must have the same length")
        cfg = dict(locals())
        self.causal = causal
        self.upsample_factor = 1
        for u in upscale_factors:
            self.upsample_factor *= u
        dims = list(hidden_dims) + [output_dim]
        self.in_proj = nn.Linear(input_dim, dims[0])
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList()
        for i, factor in enumerate(upscale_factors):
            window = window_size if i < len(upscale_factors) - 1 else last_window_size
            self.layers.append(FocalUpScale(dims[i], dims[i + 1], factor, **_block_kwargs(cfg, window)))
        self.refiner = ChunkRefiner(1 + lookahead_size, output_dim, dropout) if causal and lookahead_size > 0 else None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``lengths (B,)``: valid frames per item; the refiner zero-pads from there to its block."""
        x = self.dropout(self.in_proj(x))
        for layer in self.layers:
            x, lengths = layer(x, lengths)
        return x if self.refiner is None else self.refiner(x, lengths)
