"""Codecs under evaluation, behind one interface.

``codec.roundtrip(audio) -> Reconstruction``: ``audio`` is ``(N,)`` float32 at 16 kHz; the
reconstruction carries its own sample rate, the number of payload bits actually produced (the
real bitrate is ``num_bits / duration``) and, for token codecs, the tokens.

Built-in codecs (see :func:`codec_names`): ``codec2-700c/1200/1300/1400/1600/2400/3200``
(pycodec2, else the Debian ``c2enc``/``c2dec`` tools), ``opus-6``/``opus-8`` (any ``opus-N``
in kbit/s; ``opusenc``/``opusdec`` from opus-tools), ``focalcodec`` / ``focalcodec:MODEL``
(this package), ``reference:CONFIG`` (the unchanged reference implementation through
``torch.hub``, when a local copy exists), ``identity`` (16-bit PCM, an upper bound). Any
other codec: subclass :class:`Codec` and call :func:`register_codec`, or name a factory as
``package.module:attribute``.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import check_signal, fit_length, resample
from ..errors import FocalCodecError, InputError

__all__ = [
    "Codec",
    "Codec2Codec",
    "CodecUnavailable",
    "FocalCodecCodec",
    "IdentityCodec",
    "OpusCodec",
    "Reconstruction",
    "ReferenceFocalCodec",
    "build_codec",
    "codec_names",
    "ogg_packet_sizes",
    "register_codec",
]

SAMPLE_RATE = 16000


class CodecUnavailable(FocalCodecError, RuntimeError):
    """A codec whose library, tool or weights are not installed here."""


@dataclass
class Reconstruction:
    """One decoded utterance.

    ``audio``: (M,) float32 at ``sample_rate``; ``num_bits``: payload bits produced by the
    encoder (None when unknown); ``file_bits``: size of the file the codec writes, headers and
    container included; ``tokens``: (T,) int64 for token codecs; ``extra``: codec specific facts."""

    audio: np.ndarray
    sample_rate: int
    num_bits: int | None = None
    tokens: np.ndarray | None = None
    file_bits: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Codec(abc.ABC):
    """A codec under evaluation. Subclasses set ``name`` and ``nominal_bitrate`` (bit/s) and
    implement :meth:`roundtrip`; those that can convert voices also implement :meth:`convert`."""

    name: str = ""
    nominal_bitrate: float = float("nan")
    codebook_size: int | None = None
    supports_vc: bool = False

    @abc.abstractmethod
    def roundtrip(self, audio: np.ndarray) -> Reconstruction:
        """Encode then decode ``audio`` (N,) float32 at 16 kHz."""

    def convert(self, source: np.ndarray, references: Sequence[np.ndarray]) -> Reconstruction:
        """Voice conversion: ``source`` (N,) spoken with the voice of ``references`` (each (M_i,)), all at 16 kHz."""
        raise CodecUnavailable(f"codec {self.name!r} does not support voice conversion")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "nominal_bitrate": self.nominal_bitrate, "codebook_size": self.codebook_size}


def _to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).round().astype(np.int16)


class IdentityCodec(Codec):
    """No coding: the input back, counted as 16-bit PCM at 16 kHz (256 kbit/s)."""

    name = "identity"
    nominal_bitrate = 16.0 * SAMPLE_RATE

    def roundtrip(self, audio: np.ndarray) -> Reconstruction:
        x = check_signal(audio).float().numpy()
        return Reconstruction(x.copy(), SAMPLE_RATE, num_bits=16 * x.shape[0], file_bits=16 * x.shape[0] + 8 * 44)


# -- Codec 2 -----------------------------------------------------------------------------------------
CODEC2_MODES = ("700C", "1200", "1300", "1400", "1600", "2400", "3200")


class Codec2Codec(Codec):
    """Codec 2 (8 kHz narrow band) at one of :data:`CODEC2_MODES`. Uses pycodec2 when installed,
    else the ``c2enc``/``c2dec`` command-line tools (Debian package ``codec2``)."""

    def __init__(self, mode: str = "1200", backend: str = "auto") -> None:
        mode = str(mode).upper()
        if mode not in CODEC2_MODES:
            raise InputError(f"unknown Codec 2 mode {mode!r}; use one of {', '.join(CODEC2_MODES)}")
        self.mode = mode
        self.name = f"codec2-{mode.lower()}"
        self.nominal_bitrate = float(int(mode.rstrip("C")))
        have_py = importlib.util.find_spec("pycodec2") is not None
        have_cli = shutil.which("c2enc") is not None and shutil.which("c2dec") is not None
        if backend == "auto":
            backend = "pycodec2" if have_py else "cli"
        if backend == "pycodec2" and not have_py:
            raise CodecUnavailable("pycodec2 is not installed (pip install pycodec2)")
        if backend == "cli" and not have_cli:
            raise CodecUnavailable(
                "Codec 2 needs pycodec2 (pip install pycodec2) or c2enc/c2dec (apt-get install codec2)"
            )
        self.backend = backend

    def roundtrip(self, audio: np.ndarray) -> Reconstruction:
        x8 = _to_int16(resample(check_signal(audio).float().numpy(), SAMPLE_RATE, 8000))
        if self.backend == "pycodec2":
            return self._pycodec2(x8)
        return self._cli(x8)

    def _pycodec2(self, x8: np.ndarray) -> Reconstruction:
        import pycodec2

        c2 = pycodec2.Codec2(700 if self.mode == "700C" else int(self.mode))
        spf = c2.samples_per_frame()
        frames = -(-x8.shape[0] // spf)
        padded = np.zeros(frames * spf, dtype=np.int16)
        padded[: x8.shape[0]] = x8
        out = np.empty_like(padded)
        for i in range(frames):
            packed = c2.encode(padded[i * spf : (i + 1) * spf])
            out[i * spf : (i + 1) * spf] = c2.decode(packed)
        y = out[: x8.shape[0]].astype(np.float32) / 32768.0
        return Reconstruction(
            y,
            8000,
            num_bits=frames * c2.bits_per_frame(),
            file_bits=8 * frames * c2.bytes_per_frame(),
            extra={"frames": frames},
        )

    def _cli(self, x8: np.ndarray) -> Reconstruction:
        with tempfile.TemporaryDirectory(prefix="focalcodec-c2-") as tmp:
            raw, bit, dec = Path(tmp, "in.raw"), Path(tmp, "out.bit"), Path(tmp, "out.raw")
            raw.write_bytes(x8.astype("<i2").tobytes())
            _run(["c2enc", self.mode, str(raw), str(bit)])
            _run(["c2dec", self.mode, str(bit), str(dec)])
            y = np.frombuffer(dec.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
            num_bits = bit.stat().st_size * 8
        y = fit_length(y, x8.shape[0])
        return Reconstruction(
            y, 8000, num_bits=num_bits, file_bits=num_bits, extra={"note": "bits include byte padding per frame"}
        )


def _run(cmd: list[str]) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=600)
    except FileNotFoundError:
        raise CodecUnavailable(f"{cmd[0]} is not installed") from None
    if proc.returncode != 0:
        raise FocalCodecError(
            f"{' '.join(cmd[:2])} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()[-300:]}"
        )


# -- Opus ---------------------------------------------------------------------------------------------
def ogg_packet_sizes(data: bytes) -> list[int]:
    """Sizes in bytes of the packets of an Ogg stream (single logical stream), in order."""
    sizes: list[int] = []
    pos, current = 0, 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise InputError(f"not an Ogg page at byte {pos}")
        nseg = data[pos + 26]
        table = data[pos + 27 : pos + 27 + nseg]
        pos += 27 + nseg
        for lace in table:
            current += lace
            if lace < 255:
                sizes.append(current)
                current = 0
        pos += sum(table)
    if current:
        sizes.append(current)
    return sizes


class OpusCodec(Codec):
    """Opus (libopus via opus-tools) at ``kbps`` kbit/s, VBR, 20 ms frames, 16 kHz input.

    ``num_bits`` counts the Opus audio packets only; ``file_bits`` is the whole Ogg Opus file."""

    def __init__(self, kbps: float = 6.0, complexity: int = 10) -> None:
        if not 6 <= float(kbps) <= 512:
            raise InputError(f"Opus bitrate must be 6..512 kbit/s, got {kbps}")
        for tool in ("opusenc", "opusdec"):
            if shutil.which(tool) is None:
                raise CodecUnavailable(f"{tool} is not installed (apt-get install opus-tools)")
        self.kbps = float(kbps)
        self.complexity = int(complexity)
        self.name = f"opus-{kbps:g}"
        self.nominal_bitrate = 1000.0 * self.kbps

    def roundtrip(self, audio: np.ndarray) -> Reconstruction:
        import soundfile as sf

        x = check_signal(audio).float().numpy()
        with tempfile.TemporaryDirectory(prefix="focalcodec-opus-") as tmp:
            wav, enc, dec = Path(tmp, "in.wav"), Path(tmp, "out.opus"), Path(tmp, "out.wav")
            sf.write(str(wav), _to_int16(x), SAMPLE_RATE, subtype="PCM_16")
            _run(
                [
                    "opusenc",
                    "--quiet",
                    "--bitrate",
                    f"{self.kbps:g}",
                    "--comp",
                    str(self.complexity),
                    str(wav),
                    str(enc),
                ]
            )
            _run(["opusdec", "--quiet", "--rate", str(SAMPLE_RATE), str(enc), str(dec)])
            data = enc.read_bytes()
            y, rate = sf.read(str(dec), dtype="float32", always_2d=True)
        packets = ogg_packet_sizes(data)[2:]  # skip OpusHead and OpusTags
        y = y[:, 0]
        y = fit_length(y, x.shape[0])
        return Reconstruction(
            y, int(rate), num_bits=8 * sum(packets), file_bits=8 * len(data), extra={"packets": len(packets)}
        )


# -- FocalCodec ------------------------------------------------------------------------------------------
def _bitstream_bits(model: Any, tokens: torch.Tensor, num_samples: int) -> int | None:
    """Size in bits of the ``.fc`` file this package writes for ``tokens`` (header included),
    or None when the bitstream module is not available."""
    try:
        from ..bitstream import CompressedAudio
    except ImportError:
        return None
    blob = CompressedAudio.describe(
        model, tokens.detach().cpu().numpy().reshape(-1), SAMPLE_RATE, num_samples
    ).to_bytes()
    return 8 * len(blob)


class FocalCodecCodec(Codec):
    """This package's FocalCodec: ``encode`` then ``decode``; voice conversion with kNN over
    the continuous encoder features of the target's utterances (SPEC §3.4, k = 4).

    ``num_bits`` = tokens x D (the bit-packed payload); ``file_bits`` = the size of the ``.fc``
    file written by :mod:`focalcodec.bitstream` (header and checksums included)."""

    supports_vc = True

    def __init__(
        self,
        model: str | Path | Any = "lucadellalib/focalcodec_50hz",
        device: str = "cpu",
        matching_model: Any | None = None,
        topk: int = 4,
    ) -> None:
        from ..codec import FocalCodec

        self.model = model if isinstance(model, FocalCodec) else FocalCodec.from_pretrained(model, map_location=device)
        self.model.eval()
        self.matching_model = matching_model or self.model
        self.topk = topk
        label = getattr(self.model, "model_id", None) or (
            Path(str(model)).name if not isinstance(model, FocalCodec) else "model"
        )
        self.name = f"focalcodec:{Path(str(label)).name}"
        self.nominal_bitrate = float(self.model.bitrate)
        self.codebook_size = int(self.model.codebook_size)

    @torch.inference_mode()
    def roundtrip(self, audio: np.ndarray) -> Reconstruction:
        x = check_signal(audio).float()
        toks, _ = self.model.encode(x)
        y, _ = self.model.decode(toks)
        return self._result(toks, y, x.shape[0])

    def _result(self, toks: torch.Tensor, y: torch.Tensor, num_samples: int) -> Reconstruction:
        return Reconstruction(
            y.detach().cpu().float().numpy().reshape(-1),
            int(self.model.sample_rate_output),
            num_bits=int(toks.numel()) * int(self.model.code_dim),
            tokens=toks.detach().cpu().numpy().reshape(-1),
            file_bits=_bitstream_bits(self.model, toks, num_samples),
        )

    @torch.inference_mode()
    def matching_set(self, references: Sequence[np.ndarray]) -> torch.Tensor:
        """``(M, C)``: the encoder features of every reference utterance, concatenated in time
        (:func:`focalcodec.vc.build_speaker_set`)."""
        from ..vc import build_speaker_set

        if not references:
            raise InputError("voice conversion needs at least one reference utterance of the target speaker")
        refs = [check_signal(r).float() for r in references]
        return build_speaker_set(self.matching_model, refs).feats

    @torch.inference_mode()
    def convert(self, source: np.ndarray, references: Sequence[np.ndarray]) -> Reconstruction:
        from ..vc import convert_tokens

        ms = self.matching_set(references)
        x = check_signal(source).float()
        toks, _ = self.model.encode(x)
        y = convert_tokens(self.model, toks[None], ms, topk=self.topk)[0]
        return self._result(toks, y, x.shape[0])


class ReferenceFocalCodec(Codec):
    """The unchanged reference implementation, loaded with ``torch.hub`` from a local copy:
    ``repo_dir``, ``$FOCALCODEC_REFERENCE_DIR`` or the torch hub cache
    (``lucadellalib_focalcodec_main``); downloads only with ``FOCALCODEC_ALLOW_DOWNLOAD=1``."""

    supports_vc = True

    def __init__(
        self, config: str = "lucadellalib/focalcodec_50hz", repo_dir: str | None = None, device: str = "cpu"
    ) -> None:
        repo = repo_dir or os.environ.get("FOCALCODEC_REFERENCE_DIR")
        cached = Path(torch.hub.get_dir()) / "lucadellalib_focalcodec_main"
        if not repo and (cached / "hubconf.py").is_file():
            repo = str(cached)
        try:
            if repo:
                self.model = torch.hub.load(repo, "focalcodec", config=config, source="local", trust_repo=True)
            elif os.environ.get("FOCALCODEC_ALLOW_DOWNLOAD", "") not in ("", "0"):
                self.model = torch.hub.load("lucadellalib/focalcodec", "focalcodec", config=config, trust_repo=True)
            else:
                raise CodecUnavailable(
                    "the reference implementation is not available locally: set FOCALCODEC_REFERENCE_DIR to a clone "
                    "of lucadellalib/focalcodec (or FOCALCODEC_ALLOW_DOWNLOAD=1)"
                )
        except CodecUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - hub loading fails in many ways
            raise CodecUnavailable(
                f"reference implementation could not be loaded: {type(exc).__name__}: {exc}"
            ) from None
        self.model = self.model.to(device).eval()
        self.device = device
        self.name = f"reference:{config.split('/')[-1]}"
        self.codebook_size = int(self.model.codebook.shape[0])
        self.nominal_bitrate = float("nan")  # set from the first utterance's token rate
        self._bits = int(round(np.log2(self.codebook_size)))

    @torch.inference_mode()
    def roundtrip(self, audio: np.ndarray) -> Reconstruction:
        x = check_signal(audio).float()[None].to(self.device)
        toks = self.model.sig_to_toks(x)
        y = self.model.toks_to_sig(toks)
        n = toks.numel()
        if not np.isfinite(self.nominal_bitrate):
            self.nominal_bitrate = self._bits * n / (x.shape[1] / SAMPLE_RATE)
        return Reconstruction(
            y[0].cpu().float().numpy(),
            int(self.model.sample_rate_output),
            num_bits=self._bits * n,
            tokens=toks[0].cpu().numpy(),
        )

    @torch.inference_mode()
    def convert(self, source: np.ndarray, references: Sequence[np.ndarray]) -> Reconstruction:
        feats = [self.model.sig_to_feats(check_signal(r).float()[None].to(self.device))[0] for r in references]
        toks = self.model.sig_to_toks(check_signal(source).float()[None].to(self.device))
        y = self.model.toks_to_sig(toks, matching_set=torch.cat(feats, dim=0))
        return Reconstruction(
            y[0].cpu().float().numpy(),
            int(self.model.sample_rate_output),
            num_bits=self._bits * toks.numel(),
            tokens=toks[0].cpu().numpy(),
        )


# -- registry ---------------------------------------------------------------------------------------------
_FACTORIES: dict[str, Callable[..., Codec]] = {}


def register_codec(name: str, factory: Callable[..., Codec]) -> None:
    """Make ``build_codec(name)`` (and ``focalcodec evaluate --codec name``) call ``factory(**options)``."""
    _FACTORIES[name.lower()] = factory


for _mode in CODEC2_MODES:
    register_codec(f"codec2-{_mode.lower()}", lambda _m=_mode, **kw: Codec2Codec(_m))
register_codec("opus-6", lambda **kw: OpusCodec(6))
register_codec("opus-8", lambda **kw: OpusCodec(8))
register_codec("identity", lambda **kw: IdentityCodec())
register_codec(
    "focalcodec",
    lambda model=None, device="cpu", **kw: FocalCodecCodec(model or "lucadellalib/focalcodec_50hz", device=device),
)


def codec_names() -> list[str]:
    """The registered codec names (``opus-N``, ``focalcodec:MODEL``, ``reference:CONFIG`` and
    ``module:attribute`` are accepted as well)."""
    return sorted(_FACTORIES)


def build_codec(name: str, model: str | Any | None = None, device: str = "cpu") -> Codec:
    """The codec called ``name``; ``model`` and ``device`` are used by ``focalcodec``."""
    key = name.strip()
    low = key.lower()
    if low in _FACTORIES:
        return _FACTORIES[low](model=model, device=device)
    if low.startswith("opus-"):
        try:
            kbps = float(low[5:])
        except ValueError:
            raise InputError(f"bad Opus codec name {name!r}: use opus-KBPS, e.g. opus-6") from None
        return OpusCodec(kbps)
    if low.startswith("focalcodec:"):
        return FocalCodecCodec(key.split(":", 1)[1], device=device)
    if low.startswith("reference:") or low == "reference":
        cfg = key.split(":", 1)[1] if ":" in key else "lucadellalib/focalcodec_50hz"
        if "/" not in cfg:
            cfg = f"lucadellalib/{cfg}"
        return ReferenceFocalCodec(cfg, device=device)
    if ":" in key:
        module, _, attr = key.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"cannot import codec factory {key!r}: {exc}") from None
        codec = factory()
        if not isinstance(codec, Codec):
            raise InputError(f"{key} did not return a focalcodec.eval.baselines.Codec")
        return codec
    raise InputError(
        f"unknown codec {name!r}; known: {', '.join(codec_names())}, "
        "opus-KBPS, focalcodec:MODEL, reference:CONFIG, module:attr"
    )
