"""Screenshots of the `focalcodec serve` page for docs/serve.md, taken in headless chromium
with a fake microphone playing real speech (playwright; Debian's chromium, nothing downloaded).

    python docs/serve_screenshots.py                       # tiny causal fixture model, fast on any CPU
    python docs/serve_screenshots.py --model DIR --chromium /usr/bin/chromium

Writes docs/serve_resynth.png (one tab, a voice chosen) and docs/serve_link.png (two tabs
in link mode, side by side).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALCODEC_SHARED", ROOT.parent / "shared"))
WAIT_MS = 120_000


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import CHROMIUM, FAKE_MIC_ARGS  # the browser tests' chromium set-up

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHARED / "fixtures" / "tiny_causal_4k"))
    ap.add_argument("--speech", default=str(SHARED / "speech" / "eval" / "aishell_BAC009S0913W0306.flac"))
    ap.add_argument("--voice", default=str(SHARED / "speech" / "eval" / "asterisk_en_conf_usermenu.flac"))
    ap.add_argument("--chromium", default=CHROMIUM)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()

    import torch
    from playwright.sync_api import sync_playwright

    from focalcodec import FocalCodec
    from focalcodec.audio import load_audio
    from focalcodec.serve.server import BackgroundServer, load_speaker_sets
    from focalcodec.vc import build_speaker_set

    torch.set_num_threads(1)
    codec = FocalCodec.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "mic.wav"
        sf.write(str(wav), load_audio(args.speech, 48000).numpy(), 48000, subtype="PCM_16")
        voices = Path(tmp) / "voices"
        voices.mkdir()
        build_speaker_set(codec, [args.voice]).save(voices / "asterisk.safetensors")
        with (
            BackgroundServer(codec, speaker_sets=load_speaker_sets(voices, codec, codec)) as srv,
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(
                executable_path=args.chromium, args=[*FAKE_MIC_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
            )
            page = browser.new_page(viewport={"width": 960, "height": 760})
            page.goto(srv.url)
            page.wait_for_function("window.fc && window.fc.health", timeout=WAIT_MS)
            page.select_option("#voice", "asterisk")
            page.click("#start")
            page.wait_for_function("fc.sent.length >= 60 && fc.latencies.length >= 50", timeout=WAIT_MS)
            page.screenshot(path=str(Path(args.out) / "serve_resynth.png"), full_page=True)
            page.click("#start")
            page.wait_for_function("fc.state === 'stopped'", timeout=WAIT_MS)
            page.close()

            context = browser.new_context(viewport={"width": 640, "height": 760})
            tabs = [context.new_page() for _ in range(2)]
            for tab in tabs:
                tab.goto(srv.url)
                tab.wait_for_function("window.fc && window.fc.health", timeout=WAIT_MS)
                tab.select_option("#mode", "link")
                tab.fill("#room", "demo")
                tab.click("#start")
            for tab in tabs:
                tab.wait_for_function("fc.linkReceived.length >= 160", timeout=WAIT_MS)
            shots = [Path(tmp) / f"tab{i}.png" for i in range(2)]
            for tab, shot in zip(tabs, shots, strict=True):
                tab.screenshot(path=str(shot), full_page=True)
            # Side by side, through the browser itself (no imaging library needed).
            side = context.new_page()
            side.set_viewport_size({"width": 1290, "height": 760})
            imgs = "".join(
                f'<img src="data:image/png;base64,{__import__("base64").b64encode(s.read_bytes()).decode()}" '
                'style="width:640px;border:1px solid #ccc;margin-right:4px">'
                for s in shots
            )
            side.set_content(f'<body style="margin:0;display:flex;background:#fff">{imgs}</body>')
            side.screenshot(path=str(Path(args.out) / "serve_link.png"), full_page=True)
            browser.close()
    print(f"-> {args.out}/serve_resynth.png, {args.out}/serve_link.png")


if __name__ == "__main__":
    main()
