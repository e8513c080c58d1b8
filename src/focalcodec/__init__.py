"""FocalCodec: low-bitrate neural speech coding with a single binary codebook.

>>> from focalcodec import FocalCodec
>>> codec = FocalCodec.from_pretrained("lucadellalib/focalcodec_50hz")  # doctest: +SKIP
>>> toks, lengths = codec.encode(wav)                                     # doctest: +SKIP
>>> audio, lengths = codec.decode(toks)                                   # doctest: +SKIP
"""

from .errors import CheckpointError, ConfigError, FocalCodecError, HubError, InputError

# The rest is imported on first use (PEP 562), so that ``focalcodec --help`` and light tools do
# not pay for importing torch.
_LAZY = {
    "CompressedAudio": "bitstream",
    "DecodeOutput": "codec",
    "EncodeOutput": "codec",
    "FocalCodec": "codec",
    "compress": "compression",
    "decompress": "compression",
    "PRESETS": "config",
    "FocalCodecConfig": "config",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "CompressedAudio",
    "compress",
    "decompress",
    "CheckpointError",
    "ConfigError",
    "DecodeOutput",
    "EncodeOutput",
    "FocalCodec",
    "FocalCodecConfig",
    "FocalCodecError",
    "HubError",
    "InputError",
    "PRESETS",
    "__version__",
]
