"""torch.hub entry point."""

import torch
from conftest import FIXTURES, ROOT, fixture_io


def test_torch_hub_local_load() -> None:
    codec = torch.hub.load(str(ROOT), "focalcodec", source="local", config=str(FIXTURES / "tiny_50hz"))
    with torch.no_grad():
        assert torch.equal(codec.sig_to_toks(fixture_io("tiny_50hz")["sig"]), fixture_io("tiny_50hz")["toks"])
    random = torch.hub.load(str(ROOT), "focalcodec", source="local", config="focalcodec_25hz", pretrained=False)
    assert random.token_rate == 25.0
