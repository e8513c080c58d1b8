"""Evaluation suite: the paper's metrics and more, classic baselines, reports and plots.

Modules: ``metrics`` (interface, PESQ, STOI/ESTOI, SI-SDR, log-mel distance, token
statistics, bitrate, RTF, peak memory), ``asr`` (dWER/dCER/WER with Whisper and Whisper's
normaliser, repetition-loop guard), ``speaker`` (speaker similarity and its baselines),
``mos`` (UTMOS, DNSMOS, Distill-MOS), ``mcd_f0`` (mel-cepstral distortion, F0 accuracy),
``align`` (delay estimation and compensation), ``stats`` (bootstrap and t intervals),
``baselines`` (codec interface, Codec 2, Opus, FocalCodec, reference), ``data`` (folders,
manifests, VC pairs), ``harness`` (the loop), ``report`` (JSON + Markdown), ``plots`` (PNG),
``listening`` and ``listen_server`` (MUSHRA tests). The command lines are
``focalcodec evaluate`` and ``focalcodec listen``. Optional packages are imported only when
their metric is used.
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
