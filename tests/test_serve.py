"""``focalcodec serve``: the WebSocket protocol against StreamCodec with several concurrent
clients, every bad-client case, /health, voice conversion, origins and the link relay.
The server runs in a background thread (BackgroundServer) with the tiny causal fixture."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import numpy as np
import pytest
import torch
from conftest import FIXTURES, fixture_model, speech_files

from focalcodec.audio import load_audio
from focalcodec.serve.client import ServerError, StreamClient, health, run_stream, stream, stream_url
from focalcodec.serve.protocol import MAX_MESSAGE_BYTES, MAX_TEXT_BYTES
from focalcodec.serve.server import BackgroundServer, Limits
from focalcodec.streaming import StreamCodec, StreamDecoder

pytestmark = pytest.mark.usefixtures("one_thread")
CAUSAL = FIXTURES / "tiny_causal_4k"
TIMEOUT = 120  # generous: the machine may be shared


@pytest.fixture(scope="module")
def codec():
    from conftest import fixture_model

    return fixture_model("tiny_causal_4k")


@pytest.fixture(scope="module")
def server(codec):
    with BackgroundServer(codec, max_streams=6) as srv:
        yield srv


@pytest.fixture(scope="module")
def clips():
    files = speech_files()[:3]
    return [load_audio(f, 16000).numpy()[:40000] for f in files]


def run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


def reference(codec, x: np.ndarray, matching_set=None):
    sc = StreamCodec(codec, matching_set=matching_set)
    t1, a1 = sc.push(torch.from_numpy(x))
    t2, a2 = sc.flush()
    return torch.cat([t1, t2]).numpy(), torch.cat([a1, a2]).numpy()


def decode_reference(codec, tokens: np.ndarray):
    dec = StreamDecoder(codec)
    return torch.cat([dec.push(torch.from_numpy(tokens)), dec.flush()]).numpy()


def blocks_of(x, sizes):
    """(piece, time) pairs cutting ``x`` at the cycling ``sizes``."""
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append((x[i : i + n], 0.0))
        i += n
        k += 1
    return out


class Raw:
    """A hand-driven WebSocket client, for sending what a good client never would."""

    def __init__(self, url: str, path: str = "/v1/stream", headers: dict | None = None) -> None:
        self.url, self.path, self.headers = url, path, headers

    async def __aenter__(self):
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(
            stream_url(self.url, self.path), headers=self.headers, max_msg_size=0, compress=0
        )
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()
        await self.session.close()

    async def start(self, mode="resynth", **extra):
        await self.ws.send_str(json.dumps({"type": "start", "mode": mode, **extra}))
        msg = await self.ws.receive()
        assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "ready", msg
        return json.loads(msg.data)

    async def expect_error(self, code: int, match: str) -> str:
        """The next messages are an error (skipping outputs) and then a close with ``code``."""
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
                break
            assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        text = json.loads(msg.data)["message"]
        assert match in text, text
        closing = await self.ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
        assert self.ws.close_code == code, (self.ws.close_code, text)
        return text


# -- protocol equality -----------------------------------------------------------------------
def test_health(server, codec) -> None:
    info = health(server.url)
    assert info["status"] == "ok" and info["model"] == "tiny_causal_4k"
    assert (info["sample_rate_in"], info["sample_rate_out"], info["chunk_samples"]) == (16000, 24000, 1280)
    assert (info["tokens_per_chunk"], info["codebook_size"], info["code_dim"]) == (4, 4096, 12)
    assert info["max_streams"] == 6 and info["bitrate_bps"] == 600.0 and info["latency_ms"] == 80.0

    async def open_two():
        async with Raw(server.url) as a, Raw(server.url) as b:
            await a.start()
            await b.start("decode")
            return health(server.url)["streams_open"]

    assert run(open_two()) == 2
    assert health(server.url)["streams_open"] == 0


def test_concurrent_clients_equal_stream_codec(server, codec, clips) -> None:
    """Five clients at once, each cutting its input its own way; each gets what StreamCodec
    alone gives (tokens identical, audio within 1e-4), whatever the others do."""
    x0, x1, x2 = clips
    ref0, ref1, ref2 = reference(codec, x0), reference(codec, x1), reference(codec, x2)
    toks_for_decode = ref2[0]

    async def two_utterances():
        # One connection, two utterances: the stream restarts fresh after "flushed".
        client = await StreamClient.connect(server.url, "resynth")
        outs = []
        async with client:
            for x in (x1[:9000], x0[:5000]):
                await client.send_audio(x)
                await client.flush()
                toks, audio = [], []
                while True:
                    kind, value = await client.receive()
                    if kind == "flushed":
                        break
                    (toks if kind == "tokens" else audio).append(value)
                outs.append((np.concatenate(toks), np.concatenate(audio), value))
        return outs

    async def everyone():
        return await asyncio.gather(
            run_stream(server.url, blocks_of(x0, [777]), "resynth"),
            run_stream(server.url, blocks_of(x1, [1, 5000, 1280, 13, 64000]), "resynth"),
            run_stream(server.url, blocks_of(x2, [2560, 333]), "encode"),
            run_stream(server.url, blocks_of(toks_for_decode, [3, 1, 8]), "decode"),
            two_utterances(),
        )

    r0, r1, r2, r3, utterances = run(everyone())
    for result, (toks, audio) in ((r0, ref0), (r1, ref1)):
        np.testing.assert_array_equal(result.tokens, toks)
        assert result.audio.shape == audio.shape
        np.testing.assert_allclose(result.audio, audio, atol=1e-4, rtol=0)
        assert result.flushed == {"type": "flushed", "tokens": toks.size, "samples": audio.size}
    np.testing.assert_array_equal(r2.tokens, ref2[0])
    assert r2.audio.size == 0 and r2.flushed["samples"] == 0
    dec = decode_reference(codec, toks_for_decode)
    assert r3.tokens.size == 0 and r3.audio.shape == dec.shape
    np.testing.assert_allclose(r3.audio, dec, atol=1e-4, rtol=0)
    np.testing.assert_allclose(r3.audio, ref2[1], atol=1e-4, rtol=0)  # decode(encode(x)) == resynth(x)
    for (toks, audio, flushed), x in zip(utterances, (x1[:9000], x0[:5000]), strict=True):
        want_t, want_a = reference(codec, x)
        np.testing.assert_array_equal(toks, want_t)
        np.testing.assert_allclose(audio, want_a, atol=1e-4, rtol=0)
        assert flushed["tokens"] == want_t.size
    assert all(len(r.latencies_ms) == r.input_steps // 1280 for r in (r0, r2))  # complete chunks


def test_flush_without_audio_and_restart(server) -> None:
    async def go():
        async with Raw(server.url) as c:
            await c.start()
            await c.ws.send_str(json.dumps({"type": "flush"}))
            first = json.loads((await c.ws.receive()).data)
            await c.start("encode")  # after "flushed" a new start is allowed
            return first

    assert run(go()) == {"type": "flushed", "tokens": 0, "samples": 0}


def test_sync_client_and_decode(server, codec, clips) -> None:
    x = clips[0][:6000]
    res = stream(server.url, torch.from_numpy(x), block=500)
    toks, audio = reference(codec, x)
    np.testing.assert_array_equal(res.tokens, toks)
    back = stream(server.url, res.tokens, mode="decode")
    np.testing.assert_allclose(back.audio, audio, atol=1e-4, rtol=0)
    assert res.input_steps == x.size and back.input_steps == toks.size


def test_voice_conversion(codec, clips, tmp_path) -> None:
    from focalcodec.serve.server import load_speaker_sets
    from focalcodec.vc import build_speaker_set

    speaker = build_speaker_set(codec, [torch.from_numpy(clips[1])])
    speaker.save(tmp_path / "alice.safetensors")
    sets = load_speaker_sets(tmp_path, codec, codec)  # the causal model's own features
    x = clips[0][:12000]
    with BackgroundServer(codec, speaker_sets=sets) as srv:
        assert health(srv.url)["speaker_sets"] == ["alice"]
        got = stream(srv.url, x, block=1000, speaker_set="alice")
        with pytest.raises(ServerError, match="unknown speaker set 'bob'; available: alice"):
            stream(srv.url, x, speaker_set="bob")
    toks, audio = reference(codec, x, matching_set=speaker.feats)
    plain = reference(codec, x)[1]
    np.testing.assert_array_equal(got.tokens, toks)
    np.testing.assert_allclose(got.audio, audio, atol=1e-4, rtol=0)
    assert np.abs(got.audio - plain).max() > 1e-3  # the voice did change


# -- bad clients ------------------------------------------------------------------------------
BAD_CONTROL = [
    ("{not json", 1007, "malformed JSON"),
    ("[1, 2]", 1007, "JSON object"),
    ('{"mode": "resynth"}', 1007, 'string "type"'),
    ('{"type": 5}', 1007, 'string "type"'),
    ('{"type": "start", "mode": 3}', 1007, "mode must be one of"),
    ('{"type": "start", "mode": "transcode"}', 1007, "mode must be one of"),
    ('{"type": "start", "mode": "resynth", "speaker_set": 7}', 1007, "speaker_set must be a string"),
    ('{"type": "start", "mode": "resynth", "speaker_set": "x"}', 1007, "unknown speaker set"),
    ('{"type": "hello"}', 1007, "unknown message type"),
    ('{"type": "flush"}', 1002, "flush before start"),
]


@pytest.mark.parametrize(("text", "code", "match"), BAD_CONTROL, ids=[m for _, _, m in BAD_CONTROL])
def test_bad_control_messages(server, text, code, match) -> None:
    async def go():
        async with Raw(server.url) as c:
            await c.ws.send_str(text)
            await c.expect_error(code, match)

    run(go())
    assert health(server.url)["status"] == "ok"


@pytest.mark.parametrize(
    ("mode", "payload", "code", "match"),
    [
        (None, np.zeros(4, np.float32).tobytes(), 1002, "binary message before start"),
        ("resynth", b"\x00" * 6, 1007, "float32 samples"),
        ("resynth", np.array([0.1, np.nan], np.float32).tobytes(), 1007, "NaN"),
        ("encode", np.array([np.inf], np.float32).tobytes(), 1007, "NaN or infinite"),
        ("decode", b"\x01\x00\x02", 1007, "uint16"),
        ("decode", np.array([1, 4096], "<u2").tobytes(), 1007, "out of range"),
        ("resynth", b"\x00" * (MAX_MESSAGE_BYTES + 4), 1009, "message too big"),
    ],
    ids=["before-start", "not-float32", "nan", "inf", "odd-bytes", "token-range", "oversized"],
)
def test_bad_binary_messages(server, mode, payload, code, match) -> None:
    async def go():
        async with Raw(server.url) as c:
            if mode is not None:
                await c.start(mode)
            await c.ws.send_bytes(payload)
            await c.expect_error(code, match)

    run(go())


def test_oversized_text_and_start_mid_utterance(server) -> None:
    async def go():
        async with Raw(server.url) as c:
            await c.ws.send_str(json.dumps({"type": "start", "pad": "x" * MAX_TEXT_BYTES}))
            await c.expect_error(1009, "control message too big")
        async with Raw(server.url) as c:
            await c.start()
            await c.ws.send_bytes(np.zeros(100, np.float32).tobytes())
            await c.ws.send_str(json.dumps({"type": "start", "mode": "encode"}))
            await c.expect_error(1002, "start during an utterance")

    run(go())


def test_too_many_clients_are_refused(codec) -> None:
    async def go(url):
        async with Raw(url) as a, Raw(url) as b:
            await a.start()
            await b.start("encode")
            async with Raw(url) as c:
                await c.ws.send_str(json.dumps({"type": "start", "mode": "resynth"}))
                text = await c.expect_error(1013, "server full")
            assert health(url)["refused_full"] == 1
        async with Raw(url) as d:  # slots are freed when clients leave
            await d.start()
        return text

    with BackgroundServer(codec, max_streams=2) as srv:
        text = run(go(srv.url))
    assert "all 2 streams are in use (--max-streams)" in text


def test_disconnect_mid_stream_frees_the_stream(server, codec, clips) -> None:
    x = clips[0]

    async def go():
        async with Raw(server.url) as gone:
            await gone.start()
            await gone.ws.send_bytes(x[:30000].tobytes())
            opened = health(server.url)["streams_open"]
            gone.ws._response.connection.transport.abort()  # the network drops, no close frame
        good = await run_stream(server.url, blocks_of(x, [1280]))
        return opened, good

    opened, good = run(go())
    assert opened >= 1
    toks, audio = reference(codec, x)
    np.testing.assert_array_equal(good.tokens, toks)
    np.testing.assert_allclose(good.audio, audio, atol=1e-4, rtol=0)

    async def wait_closed():
        while health(server.url)["streams_open"]:
            await asyncio.sleep(0.05)

    run(wait_closed())


def test_slow_reader_is_dropped_while_others_go_on(codec, clips) -> None:
    """A client that sends audio and never reads fills its bounded queue and is dropped; a
    well-behaved client streaming at the same time gets exact output."""
    x = clips[0]
    limits = Limits(queue_chunks=4, close_timeout=1.0, send_buffer_bytes=16384)

    def small_socket(addr_info):
        # A 4 KiB receive buffer (no autotuning), and it never reads: the output backs up.
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sock

    async def slow(url):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_socket))
        ws = await session.ws_connect(stream_url(url), compress=0)
        await ws.send_str(json.dumps({"type": "start", "mode": "resynth"}))
        await ws.send_bytes(np.tile(x, 4).tobytes())  # 10 s of audio, never read back
        while True:
            async with session.get(url + "/health") as r:
                info = await r.json()
            if info["dropped_slow"]:
                break
            await asyncio.sleep(0.05)
        await session.close()
        return info["dropped_slow"]

    async def go(url):
        return await asyncio.gather(slow(url), run_stream(url, blocks_of(x, [640])))

    with BackgroundServer(codec, limits=limits) as srv:
        dropped, good = run(go(srv.url))
        assert dropped == 1
        toks, audio = reference(codec, x)
        np.testing.assert_array_equal(good.tokens, toks)
        np.testing.assert_allclose(good.audio, audio, atol=1e-4, rtol=0)


def test_no_start_in_time(codec) -> None:
    async def go(url):
        async with Raw(url) as c:
            await c.expect_error(1008, "no start message within 0.3 s")

    with BackgroundServer(codec, limits=Limits(start_timeout=0.3)) as srv:
        run(go(srv.url))


def test_a_flood_of_flushes_is_bounded(server, codec, clips) -> None:
    """A client that sends flushes without reading their answers is not read past a few
    unanswered ones; one that cuts its audio into single samples gets exact output."""
    from focalcodec.serve.server import MAX_PENDING_FLUSHES

    def pending() -> int:
        return max((len(s.flush_marks) for s in server.server.sessions.values()), default=0)

    async def go():
        async with Raw(server.url) as c:
            await c.start()
            flood = json.dumps({"type": "flush"})
            for _ in range(500):
                await c.ws.send_str(flood)
            most = server.call(pending)
            answered = 0
            while answered < 500:
                msg = json.loads((await c.ws.receive()).data)
                assert msg == {"type": "flushed", "tokens": 0, "samples": 0}
                answered += 1
                most = max(most, server.call(pending))
            return most

    assert run(go()) <= MAX_PENDING_FLUSHES + 1
    x = clips[2][:3000]
    res = run(run_stream(server.url, blocks_of(x, [1])))
    toks, audio = reference(codec, x)
    np.testing.assert_array_equal(res.tokens, toks)
    np.testing.assert_allclose(res.audio, audio, atol=1e-4, rtol=0)


def test_client_errors(server) -> None:
    with pytest.raises(ServerError, match="not an http"):
        stream_url("ftp://x")
    with pytest.raises(ServerError, match="mode must be one of"):
        run(StreamClient.connect(server.url, "transcode"))
    with pytest.raises(ServerError, match="cannot reach"):
        health("http://127.0.0.1:9")


# -- origins, hosts, link --------------------------------------------------------------------
def test_origins_and_hosts(codec) -> None:
    async def status(url, headers):
        try:
            async with Raw(url, headers=headers) as c:
                await c.start()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    with BackgroundServer(codec, allowed_origins=["https://app.example"]) as srv:
        port = srv.port
        assert run(status(srv.url, {"Origin": f"http://127.0.0.1:{port}"})) == 101  # its own page
        assert run(status(srv.url, {"Origin": "https://app.example"})) == 101
        assert run(status(srv.url, {"Origin": "https://evil.example"})) == 403
        assert run(status(srv.url, {"Host": f"evil.example:{port}"})) == 403  # DNS rebinding


def test_link_relays_frames_between_two_peers(server) -> None:
    async def go():
        async with Raw(server.url, "/v1/link/room1") as a, Raw(server.url, "/v1/link/room1") as b:
            first = json.loads((await a.ws.receive()).data)
            assert first["peers"] == 1 and first["frame_bytes"] == 6 and first["code_dim"] == 12
            assert json.loads((await a.ws.receive()).data)["peers"] == 2
            assert json.loads((await b.ws.receive()).data)["peers"] == 2
            frames = bytes(range(12))
            await a.ws.send_bytes(frames)
            got = await b.ws.receive()
            async with Raw(server.url, "/v1/link/room1") as c:
                await c.expect_error(1008, "already has two peers")
            await b.ws.send_bytes(b"\x00" * 5)
            await b.expect_error(1007, "whole 6-byte token frames")
            return got.data

    assert run(go()) == bytes(range(12))

    async def bad_room():
        async with Raw(server.url, "/v1/link/bad.room") as c:
            await c.expect_error(1007, "room name")

    run(bad_room())


# -- the commands ------------------------------------------------------------------------------
def test_cli_serve_and_stream_through_it(codec, clips, tmp_path, capsys) -> None:
    """`focalcodec serve` in its own process: it prints its URL, answers /health, serves
    `focalcodec stream --server` (also with a speaker set built by its --features-model), and
    stops cleanly on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    import soundfile as sf
    from conftest import ROOT

    from focalcodec.cli import main
    from focalcodec.vc import build_speaker_set

    voices = tmp_path / "voices"
    voices.mkdir()
    speaker = build_speaker_set(codec, [torch.from_numpy(clips[1])])
    speaker.save(voices / "alice.safetensors")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "focalcodec", "serve", "--model", str(CAUSAL), "--port", "0", "--max-streams", "3"]
    cmd += ["--speaker-sets", str(voices), "--features-model", str(CAUSAL)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # blocks until the server listens (or exits)
        assert line.startswith("serving tiny_causal_4k on http://127.0.0.1:"), (line, proc.stderr.read())
        assert "voices: alice)" in line, line
        url = line.split(" on ")[1].split(" ")[0]
        assert health(url)["max_streams"] == 3
        src = tmp_path / "in.wav"
        sf.write(str(src), clips[0][:20000], 16000)
        out = tmp_path / "out.wav"
        assert main(["stream", str(src), "-o", str(out), "--server", url, "--block-ms", "40", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["mode"] == "server" and report["model"] == "tiny_causal_4k" and report["chunks"] == 15
        got, rate = sf.read(str(out), dtype="float32")
        want = reference(codec, sf.read(str(src), dtype="float32")[0])[1][:30000]
        assert rate == 24000 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2 / 32768, rtol=0)  # through 16-bit WAV
        alice = tmp_path / "alice.wav"
        assert main(["stream", str(src), "-o", str(alice), "--server", url, "--speaker-set", "alice"]) == 0
        capsys.readouterr()
        want = reference(codec, sf.read(str(src), dtype="float32")[0], matching_set=speaker.feats)[1][:30000]
        np.testing.assert_allclose(sf.read(str(alice), dtype="float32")[0], want, atol=2 / 32768, rtol=0)
        assert main(["stream", str(src), "--server", url, "--speaker-set", "nobody"]) == 1
        assert "unknown speaker set 'nobody'" in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "opened (resynth)" in err and "closed" in err  # the log names what happened


def test_cli_serve_errors(capsys) -> None:
    from focalcodec.cli import main

    for argv, match in (
        (["serve", "--model", str(FIXTURES / "tiny_50hz")], "causal"),
        (["serve", "--model", str(CAUSAL), "--max-streams", "0"], "--max-streams"),
        (["serve", "--model", str(CAUSAL), "--speaker-sets", "/nonexistent"], "not a folder"),
        (["stream", "x.wav", "--speaker-set", "a", "--model", str(CAUSAL)], "--server"),
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and match in err[0], (argv, err)


def test_cli_serve_checks_speaker_sets_against_the_features_model(codec, clips, tmp_path, capsys, monkeypatch):
    """`serve --speaker-sets` applies the rule of `vc --speaker-set` (same code, same options):
    a set built by another features model (architecture, or weights unless
    --allow-other-weights) stops the server at start with one line naming the file and both
    models; before, a set of the right width from another model was served as garbage."""
    import focalcodec.serve.server as server_module
    from focalcodec import FocalCodec
    from focalcodec.cli import main
    from focalcodec.vc import SpeakerSet, build_speaker_set

    served = []
    monkeypatch.setattr(server_module, "run_server", lambda codec, **kw: served.append(kw["speaker_sets"]))
    ref = [torch.from_numpy(clips[1][:16000])]
    voices = tmp_path / "voices"
    voices.mkdir()
    good = build_speaker_set(codec, ref)
    good.save(voices / "alice.safetensors")
    base = ["serve", "--model", str(CAUSAL), "--speaker-sets", str(voices), "-q"]

    def refused(argv, *words):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: speaker set"), err
        assert all(w in err[0] for w in words), err
        assert not served  # never started, not even with the good set

    # Another architecture (the 50 Hz fixture; same feature width, so only the identity tells).
    bob = voices / "bob.safetensors"
    build_speaker_set(fixture_model("tiny_50hz"), ref).save(bob)
    refused([*base, "--features-model", str(CAUSAL)], str(bob), "tiny_50hz", "tiny_causal_4k", "architecture")
    refused([*base, "--features-model", str(CAUSAL), "--allow-other-weights"], str(bob), "architecture")
    # Same architecture, other weights: refused unless --allow-other-weights.
    other = FocalCodec.from_pretrained(CAUSAL)
    with torch.no_grad():
        other.decoder.backbone.embedding.weight.mul_(1.5)
    other_dir = tmp_path / "other" / "tiny_causal_4k"
    other.save_pretrained(other_dir)
    build_speaker_set(other, ref).save(bob, force=True)
    refused([*base, "--features-model", str(CAUSAL)], str(bob), "other weights", "--allow-other-weights")
    # --features-model says which model the sets are checked against: here the other weights.
    assert main([*base, "--features-model", str(other_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(voices / "alice.safetensors") in err[0] and "other weights" in err[0], err
    assert main([*base, "--features-model", str(CAUSAL), "--allow-other-weights"]) == 0
    assert sorted(served.pop()) == ["alice", "bob"]
    # Matching sets are served as built; an old set without identity warns once (as in vc).
    SpeakerSet(feats=good.feats).save(bob, force=True)
    with pytest.warns(UserWarning) as caught:
        assert main([*base, "--features-model", str(CAUSAL)]) == 0
    assert [str(w.message).split(" (")[0] for w in caught] == [
        f"speaker set {bob} does not record the model that built it"
    ]
    sets = served.pop()
    torch.testing.assert_close(sets["alice"], good.feats, rtol=0, atol=0)
    torch.testing.assert_close(sets["bob"], good.feats, rtol=0, atol=0)
    # The options mean nothing without --speaker-sets: said, not ignored.
    assert main(["serve", "--model", str(CAUSAL), "--features-model", str(CAUSAL)]) == 1
    assert "--speaker-sets" in capsys.readouterr().err


def test_link_rooms_are_bounded_and_paced(server, monkeypatch) -> None:
    async def go():
        peers = [Raw(server.url, f"/v1/link/r{i}") for i in range(6)]
        for p in peers:
            await p.__aenter__()
        async with Raw(server.url, "/v1/link/one-too-many") as c:
            await c.expect_error(1013, "too many link rooms")
        for p in peers:
            await p.__aexit__(None, None, None)

    run(go())

    async def no_rooms():
        while health(server.url)["link_rooms"]:
            await asyncio.sleep(0.05)

    run(no_rooms())  # rooms go away with their peers (none leaked by the refusal)

    from focalcodec.serve import server as srv_module

    clock = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(srv_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(srv_module.asyncio, "sleep", fake_sleep)
    pacer = srv_module._Pacer(rate=100.0, burst=50.0)

    async def takes():
        await pacer.take(50)  # the burst passes at once
        await pacer.take(30)  # then 100 per second: 0.3 s
        clock[0] += 1.0  # a pause refills up to the burst only
        await pacer.take(50)
        await pacer.take(10)

    asyncio.run(takes())
    assert slept == pytest.approx([0.3, 0.1])


def test_engine_threads_leave_a_core_to_the_event_loop() -> None:
    from focalcodec.cli.serve import engine_threads

    assert engine_threads(None, 2) == 1 and engine_threads(None, 16) == 15 and engine_threads(None, 1) == 1
    assert engine_threads(3, 2) == 3  # --threads wins
