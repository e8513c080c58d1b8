"""Evaluation suite: the paper's metrics and more, classic baselines, reports and plots.

Modules: ``metrics`` (interface, PESQ, STOI/ESTOI, log-mel distance, token statistics,
bitrate, RTF, peak memory), ``asr`` (dWER/dCER with Whisper), ``speaker`` (speaker
similarity), ``mos`` (UTMOS, DNSMOS, Distill-MOS), ``baselines`` (codec interface, Codec 2,
Opus, FocalCodec, reference), ``data`` (folders, manifests, VC pairs), ``harness`` (the
loop), ``report`` (JSON + Markdown), ``plots`` (PNG). The command line is
``focalcodec evaluate``. Optional packages are imported only when their metric is used.
"""

from .baselines import Codec, Reconstruction, build_codec, codec_names, register_codec
from .metrics import Metric, MetricUnavailable, available_metrics, build_metric, metric_names, register_metric

__all__ = [
    "Codec",
    "Metric",
    "MetricUnavailable",
    "Reconstruction",
    "available_metrics",
    "build_codec",
    "build_metric",
    "codec_names",
    "metric_names",
    "register_codec",
    "register_metric",
]
