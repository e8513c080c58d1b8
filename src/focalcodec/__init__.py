"""FocalCodec: low-bitrate neural speech coding with a single binary codebook.

>>> from focalcodec import FocalCodec
>>> codec = FocalCodec.from_pretrained("lucadellalib/focalcodec_50hz")  # doctest: +SKIP
>>> toks, lengths = codec.encode(wav)                                     # doctest: +SKIP
>>> audio, lengths = codec.decode(toks)                                   # doctest: +SKIP
"""

from .bitstream import CompressedAudio
from .codec import DecodeOutput, EncodeOutput, FocalCodec
from .compression import compress, decompress
from .config import PRESETS, FocalCodecConfig
from .errors import CheckpointError, ConfigError, FocalCodecError, HubError, InputError

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
