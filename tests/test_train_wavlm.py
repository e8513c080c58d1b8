"""Encoder initialisation from Hugging Face WavLM weights, checked against transformers."""

from __future__ import annotations

import pytest
import torch

from focalcodec.errors import CheckpointError
from focalcodec.train.stages import load_part_state
from focalcodec.train.wavlm_init import convert_hf_wavlm_state_dict, load_hf_wavlm


def _hf_model(num_layers: int = 3, seed: int = 0, **extra):
    from transformers import WavLMConfig, WavLMModel

    kwargs = dict(
        hidden_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=[32] * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
    )
    config = WavLMConfig(**{**kwargs, **extra})
    torch.manual_seed(seed)
    model = WavLMModel(config).eval()
    with torch.no_grad():  # move every weight off its init so that no mapping error hides
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("keep", [2, 1])
def test_encoder_matches_transformers_hidden_state(tmp_path, keep):
    hf = _hf_model(num_layers=3)
    hf.save_pretrained(tmp_path)
    encoder = load_hf_wavlm(tmp_path, num_layers=keep).eval()
    assert len(encoder.encoder.layers) == keep
    sig = torch.randn(2, 20000) * 0.1
    with torch.no_grad():
        hidden = hf(sig, output_hidden_states=True).hidden_states
        feats = encoder(sig)
    # hidden_states[k] (k < num_hidden_layers) is the output of k layers, before any final norm
    assert feats.shape == hidden[keep].shape
    torch.testing.assert_close(feats, hidden[keep], atol=2e-5, rtol=1e-4)


def test_long_input_uses_the_log_spaced_relative_positions(tmp_path):
    """17.5 s = 874 frames: relative distances past the 80 exact buckets (log-spaced up to
    800, clipped beyond), where a bucketing error shows."""
    hf = _hf_model(num_layers=2, seed=1)
    hf.save_pretrained(tmp_path)
    encoder = load_hf_wavlm(tmp_path, num_layers=2).eval()
    torch.manual_seed(1)
    sig = torch.randn(1, 280000) * 0.1
    with torch.no_grad():
        hidden = hf(sig, output_hidden_states=True).hidden_states
        feats = encoder(sig)
    assert feats.shape[1] == 874 > 800
    torch.testing.assert_close(feats, hidden[2], atol=5e-5, rtol=1e-4)


def test_padded_batch_matches_transformers_with_an_attention_mask(tmp_path):
    """Items of 2.5 s and 1.2 s zero-padded into one batch: our valid frames (``frame_lengths``)
    equal transformers' with its attention mask, and each equals the item run alone."""
    hf = _hf_model(num_layers=3, seed=2)
    hf.save_pretrained(tmp_path)
    encoder = load_hf_wavlm(tmp_path, num_layers=2).eval()
    torch.manual_seed(2)
    lengths = torch.tensor([40000, 19200])
    sig = torch.randn(2, 40000) * 0.1
    sig[1, 19200:] = 0
    mask = (torch.arange(40000)[None] < lengths[:, None]).long()
    frames = encoder.num_frames(lengths)
    with torch.no_grad():
        hidden = hf(sig, attention_mask=mask, output_hidden_states=True).hidden_states[2]
        feats = encoder(sig, frame_lengths=frames)
        alone = encoder(sig[1:, :19200])
    assert frames.tolist() == [124, 59]
    for b, n in enumerate(frames.tolist()):
        torch.testing.assert_close(feats[b, :n], hidden[b, :n], atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(feats[1, :59], alone[0], atol=5e-5, rtol=1e-4)


def test_weight_norm_layouts_fuse_to_the_same_conv():
    hf = _hf_model(num_layers=2)
    sd = hf.state_dict()
    g = sd["encoder.pos_conv_embed.conv.parametrizations.weight.original0"]
    v = sd["encoder.pos_conv_embed.conv.parametrizations.weight.original1"]
    new = convert_hf_wavlm_state_dict(sd, num_layers=2)
    old_sd = {k: t for k, t in sd.items() if "parametrizations" not in k}
    old_sd["encoder.pos_conv_embed.conv.weight_g"] = g
    old_sd["encoder.pos_conv_embed.conv.weight_v"] = v
    old = convert_hf_wavlm_state_dict({f"wavlm.{k}": t for k, t in old_sd.items()}, num_layers=2)
    assert set(new) == set(old)
    torch.testing.assert_close(
        new["encoder.positional_embedding.conv.weight"], old["encoder.positional_embedding.conv.weight"]
    )
    torch.testing.assert_close(
        new["encoder.positional_embedding.conv.weight"], hf.encoder.pos_conv_embed.conv.weight.detach()
    )


def test_errors_and_hf_source_string(tmp_path):
    hf = _hf_model(num_layers=2)
    hf.save_pretrained(tmp_path)
    state = load_part_state(f"hf-wavlm:{tmp_path}", "encoder", num_layers=2)
    assert state["encoder.layers.1.attention.qkv_proj.weight"].shape == (192, 64)
    with pytest.raises(CheckpointError, match="fewer than"):
        load_hf_wavlm(tmp_path, num_layers=3)
    with pytest.raises(CheckpointError, match="lacks"):
        convert_hf_wavlm_state_dict({"feature_extractor.conv_layers.0.conv.weight": torch.zeros(1)}, 1)
    base = _hf_model(num_layers=1, feat_extract_norm="group", do_stable_layer_norm=False)
    base.save_pretrained(tmp_path / "base")
    with pytest.raises(CheckpointError, match="pre-LN"):
        load_hf_wavlm(tmp_path / "base", num_layers=1)
