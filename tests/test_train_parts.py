"""Building blocks of the training recipes: BSQ training forward, losses, mel filters,
discriminators, bucketed sampling."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from focalcodec.audio import mel_filter_bank
from focalcodec.nn import BinarySphericalQuantizer
from focalcodec.train.data import BucketBatchSampler
from focalcodec.train.discriminators import CombinedDiscriminator
from focalcodec.train.losses import (
    MelSpectrogram,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    masked_mse,
)


def test_bsq_training_forward_codes_gradient_and_entropies():
    q = BinarySphericalQuantizer(16)  # D = 4
    torch.manual_seed(0)
    lats = F.normalize(torch.randn(2, 5, 4), dim=-1).requires_grad_(True)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    out = q.quantize_with_losses(lats, mask, inv_temperature=3.0, diversity_gamma=0.7)
    assert torch.equal(out.codes.detach(), q.lats_to_codes(lats.detach()))
    assert torch.equal(out.toks, q.lats_to_toks(lats.detach()))
    # straight-through: d(codes)/d(lats) is the identity
    w = torch.randn(2, 5, 4)
    (g,) = torch.autograd.grad((out.codes * w).sum(), lats, retain_graph=True)
    torch.testing.assert_close(g, w)
    # entropies against a direct evaluation over the 16 codes
    valid = lats.detach()[mask]
    codes = torch.tensor([[(1 if (t >> (3 - i)) & 1 else -1) / 2.0 for i in range(4)] for t in range(16)])
    p = torch.softmax(2 * 3.0 * valid @ codes.T, dim=-1)
    h = lambda x: -(x * x.clamp(min=1e-5).log()).sum(-1)  # noqa: E731
    per_sample, codebook = h(p).mean(), h(p.mean(0))
    torch.testing.assert_close(out.stats["per_sample_entropy"], per_sample)
    torch.testing.assert_close(out.stats["codebook_entropy"], codebook)
    torch.testing.assert_close(out.entropy_loss, per_sample - 0.7 * codebook)
    # the entropy loss has a gradient (pushes assignments to be confident and diverse)
    (g,) = torch.autograd.grad(out.entropy_loss, lats)
    assert g.abs().sum() > 0
    # chunking does not change the result
    again = q.quantize_with_losses(lats.detach(), mask, 3.0, 0.7, chunk_size=2)
    torch.testing.assert_close(again.entropy_loss, out.entropy_loss)


def test_masked_mse_ignores_padding():
    pred, target = torch.zeros(2, 4, 3), torch.ones(2, 5, 3)
    pred[1, 2:] = 100.0  # padding of item 1
    lengths = torch.tensor([4, 2])
    assert masked_mse(pred, target, lengths).item() == pytest.approx(1.0)
    assert masked_mse(pred, target).item() > 1.0


def test_mel_filters_match_transformers_slaney_bank():
    from transformers.audio_utils import mel_filter_bank as hf_bank

    ours = mel_filter_bank(16000, 1024, 80, 0.0, 8000.0)
    ref = hf_bank(
        num_frequency_bins=513,
        num_mel_filters=80,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm="slaney",
        mel_scale="slaney",
    )
    torch.testing.assert_close(ours, torch.from_numpy(ref).float(), atol=1e-6, rtol=1e-4)
    mel = MelSpectrogram(24000, hop_length=480, f_max=12000.0)
    sig = torch.sin(2 * math.pi * 440 * torch.arange(24000) / 24000)[None]
    m = mel(sig)
    assert m.shape == (1, 80, 51)
    expected = int(mel_filter_bank(24000, 1024, 80, 0, 12000)[round(440 / 24000 * 1024)].argmax())
    assert abs(int(m[0, :, 25].argmax()) - expected) <= 1


def test_hinge_and_feature_matching_losses():
    real, fake = [torch.tensor([2.0, 0.5])], [torch.tensor([-2.0, 0.0])]
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert generator_hinge_loss(fake).item() == pytest.approx((3.0 + 1.0) / 2)
    fm = feature_matching_loss([[torch.ones(3), torch.zeros(2)]], [[torch.zeros(3), torch.zeros(2)]])
    assert fm.item() == pytest.approx(0.5)


def test_discriminators_shapes_and_full_size():
    d = CombinedDiscriminator(width=0.05)
    scores, feats = d(torch.randn(2, 7040))
    assert len(scores) == len(feats) == 8  # 5 periods + 3 scales
    assert all(s.shape[0] == 2 for s in scores)
    assert [len(f) for f in feats] == [6] * 5 + [8] * 3
    full = CombinedDiscriminator()
    n = sum(p.numel() for p in full.parameters())
    assert 70e6 < n < 71.5e6  # HiFi-GAN's MPD (41.1 M) + MSD (29.6 M)


def test_bucket_sampler_shards_buckets_and_resumes():
    durs = [1 + (i * 37 % 50) / 10 for i in range(50)]
    s0 = BucketBatchSampler(durs, batch_size=4, num_buckets=5, seed=3, num_replicas=2, rank=0)
    s1 = BucketBatchSampler(durs, batch_size=4, num_buckets=5, seed=3, num_replicas=2, rank=1)
    b0, b1 = list(s0), list(s1)
    assert len(b0) == len(b1) == len(s0)
    assert not set(i for b in b0 for i in b) & set(i for b in b1 for i in b)
    for b in b0:  # batches group similar lengths: 5 buckets of 12 (10 rounded to whole batches), 0.1 s apart
        assert max(durs[i] for i in b) - min(durs[i] for i in b) <= 1.1 + 1e-9
    s0.set_epoch(0, start=2)
    assert list(s0) == b0[2:]
    s0.set_epoch(1)
    assert list(s0) != b0  # reshuffled per epoch
    dyn = BucketBatchSampler(durs, batch_size=100, max_batch_seconds=12.0, shuffle=False)
    assert all(len(b) * max(durs[i] for i in b) <= 12.0 for b in dyn)
    assert sorted(i for b in dyn for i in b) == list(range(50))


def test_small_buckets_still_give_full_batches():
    """12 utterances in 10 buckets with batch 4: three batches of 4 (each bucket used to give
    its own batch of 1 or 2), each of neighbouring lengths."""
    durs = [1.0 + 0.25 * i for i in (7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 6, 4)]
    rank_of = {i: r for r, i in enumerate(sorted(range(12), key=lambda i: durs[i]))}
    for seed in range(4):
        batches = list(BucketBatchSampler(durs, batch_size=4, num_buckets=10, seed=seed))
        assert [len(b) for b in batches] == [4, 4, 4]
        assert sorted(i for b in batches for i in b) == list(range(12))
        assert sorted(sorted(rank_of[i] for i in b) for b in batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def _properties(durs: list[float], batch: int, buckets: int, seed: int, max_seconds: float | None = None) -> None:
    n = len(durs)
    sampler = BucketBatchSampler(durs, batch_size=batch, max_batch_seconds=max_seconds, num_buckets=buckets, seed=seed)
    batches = list(sampler)
    # every utterance once, determined by the seed, resumable at any batch
    assert sorted(i for b in batches for i in b) == list(range(n))
    again = BucketBatchSampler(durs, batch_size=batch, max_batch_seconds=max_seconds, num_buckets=buckets, seed=seed)
    assert list(again) == batches
    start = len(batches) // 2
    again.set_epoch(0, start)
    assert list(again) == batches[start:]
    rank = {i: r for r, i in enumerate(sorted(range(n), key=lambda i: (durs[i], i)))}
    if max_seconds is None:
        # full batches but one (n % batch items), each within one bucket of the sorted order
        sizes = sorted(len(b) for b in batches)
        assert sizes == [n % batch] * (n % batch > 0) + [batch] * (n // batch), (sizes, n, batch)
        span = math.ceil(math.ceil(n / buckets) / batch) * batch
        for b in batches:
            assert len({rank[i] // span for i in b}) == 1, (b, span)
        dropped = BucketBatchSampler(durs, batch_size=batch, num_buckets=buckets, seed=seed, drop_last=True)
        assert [len(b) for b in dropped] == [batch] * (n // batch)
        # N ranks share the single process's batches (as gradient accumulation over N micro-batches)
        for ranks in (2, 3):
            shards = [
                list(
                    BucketBatchSampler(
                        durs, batch_size=batch, num_buckets=buckets, seed=seed, num_replicas=ranks, rank=r
                    )
                )
                for r in range(ranks)
            ]
            if len(batches) >= ranks:
                usable = len(batches) - len(batches) % ranks
                assert [b for step in zip(*shards, strict=True) for b in step] == batches[:usable]
    else:
        # in length order (no shuffling), every batch but the last is full: the next utterance
        # would break the batch size or the seconds bound
        ordered = list(
            BucketBatchSampler(
                durs, batch_size=batch, max_batch_seconds=max_seconds, num_buckets=buckets, shuffle=False
            )
        )
        assert sorted(i for b in ordered for i in b) == list(range(n))
        for b, after in zip(ordered, ordered[1:], strict=False):
            assert len(b) * max(durs[i] for i in b) <= max_seconds or len(b) == 1
            nxt = after[0]
            assert len(b) == batch or (len(b) + 1) * max(durs[i] for i in [*b, nxt]) > max_seconds, (b, nxt)


def test_bucket_sampler_properties_on_random_sizes():
    rng = random.Random(0)
    for trial in range(60):
        n = rng.randint(1, 120)
        durs = [round(rng.uniform(0.5, 20.0), 2) for _ in range(n)]
        batch, buckets = rng.randint(1, 9), rng.randint(1, 15)
        _properties(durs, batch, buckets, seed=trial)
        _properties(durs, batch + 8, buckets, seed=trial, max_seconds=rng.uniform(20.0, 80.0))
