"""torch.hub entry point:
``torch.hub.load("<owner>/<this repo>", "focalcodec", config="lucadellalib/focalcodec_50hz")``."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

dependencies = ["torch", "numpy", "safetensors", "huggingface_hub"]

from focalcodec import FocalCodec  # noqa: E402


def focalcodec(config: str = "lucadellalib/focalcodec_50hz", pretrained: bool = True, overrides=None, **hub_kwargs):
    """FocalCodec from a preset / Hub repo id / local checkpoint; random weights if ``pretrained=False``.

    ``hub_kwargs`` (e.g. ``revision``, ``cache_dir``) go to ``huggingface_hub.hf_hub_download``.
    """
    if pretrained:
        return FocalCodec.from_pretrained(config, overrides=overrides, **hub_kwargs)
    return FocalCodec.from_config(config, overrides=overrides)
