"""Initialise the encoder from Microsoft WavLM weights in the Hugging Face ``transformers``
layout (``microsoft/wavlm-large``: ``config.json`` + ``pytorch_model.bin`` or
``model.safetensors``).

What the conversion does (SPEC §1.2):

- keeps the conv feature extractor, the feature projection, the positional conv and the
  first ``num_layers`` transformer layers (6 for FocalCodec); drops the rest, the final
  ``encoder.layer_norm`` (FocalCodec has none) and ``masked_spec_embed``;
- fuses the weight-normalised positional conv: ``w = g * v / ||v||`` with the norm taken
  over every axis but the kernel axis (``weight_norm(dim=2)``), from either the old
  ``weight_g``/``weight_v`` keys or the ``parametrizations.weight.original0/1`` keys;
- concatenates ``q_proj``, ``k_proj``, ``v_proj`` into ``qkv_proj`` in that order;
- moves layer 0's ``rel_attn_embed`` to the shared ``relative_embedding``.

The result equals ``WavLMModel(...).hidden_states[num_layers]`` when the Hugging Face model
has more than ``num_layers`` layers (the hidden state before the next layer, un-normalised),
which is what FocalCodec uses. Only the pre-LN ("stable layer norm", ``feat_extract_norm =
"layer"``) variant, i.e. WavLM-Large, is supported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..nn import WavLM

__all__ = ["convert_hf_wavlm_state_dict", "hf_wavlm_folder", "load_hf_wavlm", "wavlm_kwargs_from_hf_config"]


def wavlm_kwargs_from_hf_config(hf_config: Mapping[str, Any], num_layers: int = 6) -> dict[str, Any]:
    """Constructor arguments of our :class:`WavLM` from a Hugging Face ``WavLMConfig`` dict."""
    if hf_config.get("feat_extract_norm", "layer") != "layer" or not hf_config.get("do_stable_layer_norm", True):
        raise CheckpointError(
            "only the pre-LN WavLM variant (feat_extract_norm='layer', do_stable_layer_norm=True, "
            "i.e. WavLM-Large) can initialise the FocalCodec encoder"
        )
    if hf_config.get("conv_bias", False):
        raise CheckpointError(
            "WavLM checkpoints with conv_bias=True are not supported (the encoder's convs have no bias)"
        )
    available = int(hf_config.get("num_hidden_layers", 24))
    if num_layers > available:
        raise CheckpointError(f"the WavLM checkpoint has {available} layers, fewer than the {num_layers} requested")
    return dict(
        hidden_dims=list(hf_config.get("conv_dim", [512] * 7)),
        kernel_sizes=list(hf_config.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2])),
        strides=list(hf_config.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])),
        num_layers=num_layers,
        dim=int(hf_config.get("hidden_size", 1024)),
        ffn_dim=int(hf_config.get("intermediate_size", 4096)),
        num_heads=int(hf_config.get("num_attention_heads", 16)),
        num_buckets=int(hf_config.get("num_buckets", 320)),
        max_distance=int(hf_config.get("max_bucket_distance", 800)),
        conv_pos=int(hf_config.get("num_conv_pos_embeddings", 128)),
        conv_pos_groups=int(hf_config.get("num_conv_pos_embedding_groups", 16)),
    )


def _fuse_weight_norm(g: Tensor, v: Tensor, dim: int = 2) -> Tensor:
    """``weight_norm`` with ``dim``: ``g * v / ||v||`` (norm over every other axis)."""
    axes = [a for a in range(v.dim()) if a != dim]
    return v * (g / v.norm(dim=axes, keepdim=True))


def convert_hf_wavlm_state_dict(state: Mapping[str, Tensor], num_layers: int = 6) -> dict[str, Tensor]:
    """Hugging Face ``WavLMModel`` keys (with or without a ``wavlm.`` prefix) -> our encoder keys."""
    sd = {k[len("wavlm.") :] if k.startswith("wavlm.") else k: v for k, v in state.items()}
    out: dict[str, Tensor] = {}

    def take(key: str) -> Tensor:
        if key not in sd:
            raise CheckpointError(f"the WavLM checkpoint lacks {key!r} (not a Hugging Face WavLM-Large state dict?)")
        return sd[key]

    i = 0
    while f"feature_extractor.conv_layers.{i}.conv.weight" in sd:
        src = f"feature_extractor.conv_layers.{i}"
        out[f"feature_extractor.layers.{i}.conv.weight"] = take(f"{src}.conv.weight")
        out[f"feature_extractor.layers.{i}.norm.weight"] = take(f"{src}.layer_norm.weight")
        out[f"feature_extractor.layers.{i}.norm.bias"] = take(f"{src}.layer_norm.bias")
        i += 1
    if i == 0:
        raise CheckpointError("the WavLM checkpoint has no feature_extractor.conv_layers.* keys")
    out["norm.weight"] = take("feature_projection.layer_norm.weight")
    out["norm.bias"] = take("feature_projection.layer_norm.bias")
    out["feature_proj.weight"] = take("feature_projection.projection.weight")
    out["feature_proj.bias"] = take("feature_projection.projection.bias")

    pos = "encoder.pos_conv_embed.conv"
    if f"{pos}.weight_g" in sd:
        weight = _fuse_weight_norm(take(f"{pos}.weight_g"), take(f"{pos}.weight_v"))
    elif f"{pos}.parametrizations.weight.original0" in sd:
        weight = _fuse_weight_norm(
            take(f"{pos}.parametrizations.weight.original0"), take(f"{pos}.parametrizations.weight.original1")
        )
    else:
        weight = take(f"{pos}.weight")
    out["encoder.positional_embedding.conv.weight"] = weight
    out["encoder.positional_embedding.conv.bias"] = take(f"{pos}.bias")
    out["encoder.relative_embedding.weight"] = take("encoder.layers.0.attention.rel_attn_embed.weight")

    for n in range(num_layers):
        src, dst = f"encoder.layers.{n}", f"encoder.layers.{n}"
        att = f"{src}.attention"
        for kind in ("weight", "bias"):
            out[f"{dst}.attention.qkv_proj.{kind}"] = torch.cat(
                [take(f"{att}.q_proj.{kind}"), take(f"{att}.k_proj.{kind}"), take(f"{att}.v_proj.{kind}")], dim=0
            )
            out[f"{dst}.attention.out_proj.{kind}"] = take(f"{att}.out_proj.{kind}")
            out[f"{dst}.attention.gru_rel_pos_linear.{kind}"] = take(f"{att}.gru_rel_pos_linear.{kind}")
            out[f"{dst}.attention_norm.{kind}"] = take(f"{src}.layer_norm.{kind}")
            out[f"{dst}.feed_forward_norm.{kind}"] = take(f"{src}.final_layer_norm.{kind}")
            out[f"{dst}.feed_forward.in_proj.{kind}"] = take(f"{src}.feed_forward.intermediate_dense.{kind}")
            out[f"{dst}.feed_forward.out_proj.{kind}"] = take(f"{src}.feed_forward.output_dense.{kind}")
        out[f"{dst}.attention.gru_rel_pos_const"] = take(f"{att}.gru_rel_pos_const")
    return {k: v.detach().float().clone() for k, v in out.items()}


def _read_hf_weights(directory: Path) -> dict[str, Tensor]:
    st = directory / "model.safetensors"
    pt = directory / "pytorch_model.bin"
    if not st.is_file() and not pt.is_file():
        raise CheckpointError(f"{directory} has neither model.safetensors nor pytorch_model.bin")
    try:
        if st.is_file():
            from safetensors.torch import load_file

            return load_file(str(st), device="cpu")
        return torch.load(str(pt), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
        bad = st if st.is_file() else pt
        raise CheckpointError(f"cannot read {bad} (truncated or not a WavLM checkpoint?): {exc}") from None


def hf_wavlm_folder(source: str | Path) -> Path:
    """A local Hugging Face WavLM folder (``config.json`` + weights) for ``source``: the folder
    itself, or the files of Hub repo ``source`` (e.g. ``microsoft/wavlm-large``) fetched with
    the package's Hub downloader (a :class:`~focalcodec.errors.HubError` naming the repo when
    it cannot be reached)."""
    directory = Path(source)
    if directory.is_dir():
        return directory
    text = str(source)
    if text.count("/") != 1 or not all(text.split("/")):
        raise CheckpointError(
            f"{text!r} is neither a local WavLM folder nor a Hub repo id such as microsoft/wavlm-large"
        )
    from ..hub import _hub_download

    config = _hub_download(text, "config.json")
    if config is None:
        raise CheckpointError(f"Hugging Face repo {text!r} has no config.json (not a WavLM model?)")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if _hub_download(text, name) is not None:
            return config.parent
    raise CheckpointError(f"Hugging Face repo {text!r} has neither model.safetensors nor pytorch_model.bin")


def load_hf_wavlm(
    source: str | Path,
    num_layers: int = 6,
    encoder: WavLM | None = None,
    **overrides: Any,
) -> WavLM:
    """Build (or fill ``encoder``) from a Hugging Face WavLM folder (``config.json`` plus
    weights) or a Hub repo id such as ``microsoft/wavlm-large`` (downloaded with
    ``huggingface_hub``). ``overrides`` go to the :class:`WavLM` constructor (e.g.
    ``causal=True`` to start a causal student)."""
    directory = hf_wavlm_folder(source)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory} has no config.json (expected a Hugging Face WavLM folder)")
    hf_config = json.loads(cfg_path.read_text(encoding="utf-8"))
    kwargs = wavlm_kwargs_from_hf_config(hf_config, num_layers)  # validates before reading weights
    state = convert_hf_wavlm_state_dict(_read_hf_weights(directory), num_layers)
    if encoder is None:
        encoder = WavLM(**{**kwargs, **overrides})
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"WavLM weights do not fit the encoder: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return encoder
