"""Utterances read in DataLoader workers and encoded in length-sorted padded batches (each
gets exactly the tokens it gets alone), long ones window by window."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from ..audio import load_audio
from ..errors import FocalCodecError
from ..longform import encode_long
from ..windowing import DEFAULT, Windowing
from .listing import CorpusItem

__all__ = ["AUTOCAST_DTYPES", "AudioFiles", "encode_window", "first", "length_batches", "worker_init"]


class AudioFiles(torch.utils.data.Dataset):
    """``dataset[i] -> (i, (N,) float32 at 16 kHz or None, reason or None)``; never raises
    for a bad file, so that one file cannot stop the run."""

    def __init__(self, items: Sequence[CorpusItem], sample_rate: int, max_duration: float | None) -> None:
        self.items = list(items)
        self.sample_rate = sample_rate
        self.max_duration = max_duration

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str | None]:
        item = self.items[i]
        try:
            sig = load_audio(item.file, self.sample_rate, warn=False)
        except FocalCodecError as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure of one file is reported, not fatal
            return i, None, f"{type(exc).__name__}: {exc}"
        if self.max_duration is not None and sig.numel() > self.max_duration * self.sample_rate:
            return i, None, f"longer than the limit of {self.max_duration:g} s ({sig.numel() / self.sample_rate:.1f} s)"
        return i, sig, None


def worker_init(_: int) -> None:
    torch.set_num_threads(1)


def first(batch: list[Any]) -> Any:
    return batch[0]


def length_batches(lengths: Sequence[int], max_batch_samples: int, max_batch_size: int) -> list[list[int]]:
    """Group indices of ``lengths`` into batches of similar length (longest first) such that
    ``len(batch) * longest <= max_batch_samples`` and ``len(batch) <= max_batch_size``; an item
    longer than the budget forms a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * longest > max_batch_samples or len(cur) >= max_batch_size):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


AUTOCAST_DTYPES = ("float16", "bfloat16")


def _encode_batch(model: Any, sigs: Sequence[Tensor]) -> list[Tensor]:
    """Padded batch with per-item lengths -> each item's tokens ``(T_i,)`` int64 on CPU."""
    lens = torch.tensor([s.numel() for s in sigs])
    batch = torch.zeros(len(sigs), int(lens.max()))
    for row, s in enumerate(sigs):
        batch[row, : s.numel()] = s
    toks, tok_lens = model.encode(batch, lens)
    toks = toks.cpu()
    return [toks[row, : int(tok_lens[row])].clone() for row in range(len(sigs))]


def _failure(exc: BaseException) -> str:
    return f"encoding failed: {type(exc).__name__}: {exc}"


def encode_window(
    model: Any,
    sigs: dict[int, Tensor],
    max_batch_samples: int,
    max_batch_size: int,
    windowing: Windowing = DEFAULT,
    autocast: str | None = None,
) -> tuple[dict[int, Tensor], dict[int, str]]:
    """Encode ``{index: (N,) signal}`` in length-sorted batches. Utterances longer than one
    window with its context (16 s by default) are encoded alone, window by window (shorter
    ones would be one pass there too, and causal models give one-pass tokens in any case). A
    batch that fails is retried item by item, so only the items that fail alone are reported
    (as ``{index: reason}``). ``autocast``: a dtype of :data:`AUTOCAST_DTYPES` to run under
    ``torch.autocast`` (the codec keeps its sign decisions in float32)."""
    tokens: dict[int, Tensor] = {}
    errors: dict[int, str] = {}
    limit = sum(windowing.token_geometry(model.token_rate)) * model.hop_length
    region = torch.autocast(model.device.type, dtype=getattr(torch, autocast)) if autocast else nullcontext()
    with region:
        for k in [k for k in sigs if sigs[k].numel() > limit]:
            try:
                tokens[k] = encode_long(model, sigs[k], windowing).cpu()
            except (KeyboardInterrupt, SystemExit):
                raise
            except MemoryError:
                errors[k] = "out of memory while encoding (window by window); use a smaller --window"
            except Exception as exc:  # noqa: BLE001
                errors[k] = _failure(exc)
        keys = [k for k in sigs if sigs[k].numel() <= limit]
        for batch in length_batches([sigs[k].numel() for k in keys], max_batch_samples, max_batch_size):
            ids = [keys[b] for b in batch]
            try:
                tokens.update(zip(ids, _encode_batch(model, [sigs[k] for k in ids]), strict=True))
                continue
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - retried one item at a time below
                if len(ids) == 1:
                    errors[ids[0]] = _failure(exc)
                    continue
            for k in ids:
                try:
                    tokens[k] = _encode_batch(model, [sigs[k]])[0]
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001
                    errors[k] = _failure(exc)
    return tokens, errors
