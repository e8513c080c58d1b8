"""The five parts of FocalCodec, one module per concept.

encoder (:mod:`.wavlm`) -> compressor (:mod:`.focalnet`) -> quantizer (:mod:`.bsq`)
-> decompressor (:mod:`.focalnet`) -> decoder (:mod:`.vocos` or :mod:`.wavenext`).
"""

from .bsq import BinarySphericalQuantizer
from .focalnet import FocalCompressor, FocalDecompressor
from .vocos import Vocos
from .wavenext import WaveNeXt
from .wavlm import WavLM

__all__ = ["BinarySphericalQuantizer", "FocalCompressor", "FocalDecompressor", "Vocos", "WaveNeXt", "WavLM"]
