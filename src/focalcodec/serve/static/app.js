// The focalcodec page: microphone -> server -> tokens -> audio, and two-tab "link" mode.
// Protocol: docs/serve.md. Everything the page sent and received is kept in `window.fc`
// (the browser test compares it with the Python client's results).
"use strict";

const $ = (id) => document.getElementById(id);
const fc = (window.fc = {
  state: "idle", // idle | starting | running | stopping | stopped | error
  error: null,
  health: null,
  ready: null,
  sent: [], // Float32Array blocks of 16 kHz audio sent to the server
  tokens: [], // tokens received from the encoder
  audio: [], // Float32Array blocks of audio received
  latencies: [], // ms from a chunk's last captured sample to its output's arrival
  linkSent: [], // link mode: tokens sent to the other tab
  linkReceived: [], // link mode: tokens received from the other tab
  linkBytesSent: 0,
  peers: 0,
  flushed: null,
});

// -- helpers ---------------------------------------------------------------------------------
const wsUrl = (path) => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;

function concat(blocks, Type) {
  const n = blocks.reduce((a, b) => a + b.length, 0);
  const out = new Type(n);
  let i = 0;
  for (const b of blocks) {
    out.set(b, i);
    i += b.length;
  }
  return out;
}

// Base64 of the concatenated blocks of `fc[name]` (Float32Array blocks, or numbers as uint16).
fc.dump = (name) => {
  const blocks = fc[name];
  const arr = blocks.length && typeof blocks[0] === "number" ? Uint16Array.from(blocks) : concat(blocks, Float32Array);
  const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
};

// K tokens of D bits -> ceil(K*D/8) bytes, most significant bit first (the .fc packing).
function packFrame(tokens, D) {
  const out = new Uint8Array(Math.ceil((tokens.length * D) / 8));
  let bit = 0;
  for (const t of tokens) {
    for (let b = D - 1; b >= 0; b--, bit++) if ((t >>> b) & 1) out[bit >> 3] |= 0x80 >> (bit & 7);
  }
  return out;
}

function unpackFrames(bytes, K, D) {
  const size = Math.ceil((K * D) / 8);
  const tokens = [];
  for (let f = 0; f + size <= bytes.length; f += size) {
    let bit = 0;
    for (let k = 0; k < K; k++) {
      let t = 0;
      for (let b = 0; b < D; b++, bit++) t = (t << 1) | ((bytes[f + (bit >> 3)] >> (7 - (bit & 7))) & 1);
      tokens.push(t);
    }
  }
  return tokens;
}

const median = (xs) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function fail(message) {
  if (fc.state === "error") return;
  fc.error = message;
  fc.state = "error";
  setStatus(message, true);
  teardown();
}

// Opens /v1/stream with `start`; resolves with the socket once the server is ready.
function openStream(start, handlers) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl("/v1/stream"));
    ws.binaryType = "arraybuffer";
    let ready = false;
    ws.onopen = () => ws.send(JSON.stringify(start));
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") return handlers.audio && handlers.audio(new Float32Array(e.data));
      const msg = JSON.parse(e.data);
      if (msg.type === "ready") {
        ready = true;
        resolve(ws);
      } else if (msg.type === "tokens") handlers.tokens && handlers.tokens(msg.tokens);
      else if (msg.type === "flushed") handlers.flushed && handlers.flushed(msg);
      else if (msg.type === "error") {
        ws.errorMessage = msg.message;
        if (!ready) reject(new Error(msg.message));
        else fail(`server: ${msg.message}`);
      }
    };
    ws.onclose = (e) => {
      if (!ready) reject(new Error(ws.errorMessage || `connection closed (code ${e.code})`));
      else if (fc.state === "running" && !ws.closing) fail(ws.errorMessage || `connection closed (code ${e.code})`);
    };
  });
}

// -- the session ------------------------------------------------------------------------------
let ctx = null;
let media = null;
let capture = null;
let player = null;
let sockets = {}; // stream, enc, dec, link
let captureTimes = []; // performance.now() when each chunk was captured
let outputChunks = 0;
let firstOutputAt = null;
let tokenBits = 0;
let onFlushed = null; // resolves stop()'s wait for the server's "flushed"

async function loadHealth() {
  const r = await fetch("/health");
  const h = await r.json();
  fc.health = h;
  $("streams").textContent = `${h.streams_open} / ${h.max_streams}`;
  return h;
}

async function init() {
  try {
    const h = await loadHealth();
    $("model").textContent =
      `${h.model}: ${h.sample_rate_in / 1000} kHz in, ${h.sample_rate_out / 1000} kHz out, ` +
      `${h.tokens_per_chunk} tokens of ${h.code_dim} bits per ${h.latency_ms} ms = ${h.bitrate_bps} bit/s`;
    for (const name of h.speaker_sets) {
      const o = document.createElement("option");
      o.value = o.textContent = name;
      $("voice").appendChild(o);
    }
    $("tok-k").textContent = `${h.tokens_per_chunk} per ${h.latency_ms} ms chunk, ids 0-${h.codebook_size - 1}`;
  } catch (e) {
    setStatus(`cannot reach the server: ${e.message}`, true);
  }
  setInterval(() => loadHealth().catch(() => {}), 1000);
}

function showTokens(tokens, peer) {
  const box = $("tokens");
  const span = document.createElement("span");
  span.className = peer ? "chunk peer" : "chunk";
  const width = String((fc.health && fc.health.codebook_size - 1) || 9999).length;
  span.textContent = tokens.map((t) => String(t).padStart(width, "0")).join(" ");
  box.appendChild(span);
  while (box.childNodes.length > 400) box.removeChild(box.firstChild);
  box.scrollTop = box.scrollHeight;
}

function updateFigures() {
  $("chunks").textContent = String(captureTimes.length);
  if (fc.latencies.length) {
    $("lat").textContent = median(fc.latencies.slice(-200)).toFixed(0);
    $("lat-last").textContent = fc.latencies[fc.latencies.length - 1].toFixed(0);
  }
  if (firstOutputAt !== null) {
    const seconds = (performance.now() - firstOutputAt) / 1000;
    if (seconds > 0.5) {
      const bits = $("mode").value === "link" ? 8 * fc.linkBytesSent : tokenBits;
      $("bps").textContent = Math.round(bits / seconds);
    }
  }
  const t = captureTimes.length * (fc.health ? fc.health.latency_ms : 80);
  $("clock").textContent = `${(t / 1000).toFixed(1)} s of audio`;
}

function onOutputChunk() {
  // One chunk's output arrived: its latency, from when its last sample was captured.
  if (outputChunks < captureTimes.length) fc.latencies.push(performance.now() - captureTimes[outputChunks]);
  outputChunks++;
  if (firstOutputAt === null) firstOutputAt = performance.now();
  updateFigures();
}

function playAudio(x) {
  fc.audio.push(x.slice());
  player.port.postMessage(x, [x.buffer]);
}

async function start() {
  const h = fc.health || (await loadHealth());
  const mode = $("mode").value;
  const voice = $("voice").value || null;
  Object.assign(fc, { state: "starting", error: null, sent: [], tokens: [], audio: [], latencies: [] });
  Object.assign(fc, { linkSent: [], linkReceived: [], linkBytesSent: 0, flushed: null });
  captureTimes = [];
  outputChunks = 0;
  firstOutputAt = null;
  tokenBits = 0;
  $("tokens").textContent = "";
  $("start").textContent = "Stop";
  $("start").className = "stop";
  $("mode").disabled = $("voice").disabled = $("room").disabled = true;
  setStatus("starting: asking for the microphone");
  try {
    ctx = new AudioContext({ latencyHint: "interactive" });
    await ctx.audioWorklet.addModule("/static/worklet.js");
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    player = new AudioWorkletNode(ctx, "focalcodec-playback", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { rate: h.sample_rate_out, prebufferMs: 120 },
    });
    player.port.onmessage = (e) => ($("buffer").textContent = e.data.bufferedMs.toFixed(0));
    player.connect(ctx.destination);

    if (mode === "resynth") {
      setStatus("starting: opening a stream");
      sockets.stream = await openStream(
        { type: "start", mode: "resynth", ...(voice ? { speaker_set: voice } : {}) },
        {
          tokens: (t) => {
            fc.tokens.push(...t);
            tokenBits += t.length * h.code_dim;
            showTokens(t, false);
          },
          audio: (x) => {
            playAudio(x);
            onOutputChunk();
          },
          flushed: flushedHandler,
        },
      );
      fc.ready = { mode: "resynth" };
    } else {
      await startLink(h, voice);
    }

    const source = ctx.createMediaStreamSource(media);
    capture = new AudioWorkletNode(ctx, "focalcodec-capture", {
      numberOfOutputs: 1,
      processorOptions: { rate: h.sample_rate_in, block: h.chunk_samples },
    });
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(capture).connect(mute).connect(ctx.destination);
    capture.port.onmessage = (e) => onCaptured(e.data);
    fc.state = "running";
    if (mode === "resynth") setStatus(`streaming${voice ? ` in the voice of ${voice}` : ""}: speak`);
  } catch (e) {
    fail(e.message || String(e));
  }
}

function flushedHandler(msg) {
  fc.flushed = msg;
  if (onFlushed) onFlushed();
}

function onCaptured(block) {
  if (fc.state !== "running") return;
  const ws = sockets.stream || sockets.enc;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  fc.sent.push(block.slice());
  ws.send(block.buffer);
  captureTimes.push(performance.now());
  updateFigures();
}

async function startLink(h, voice) {
  const room = $("room").value.trim() || "demo";
  const K = h.tokens_per_chunk;
  const D = h.code_dim;
  // The decoder first: every token that arrives over the link is decoded.
  sockets.dec = await openStream(
    { type: "start", mode: "decode", ...(voice ? { speaker_set: voice } : {}) },
    { audio: (x) => playAudio(x) },
  );
  setStatus(`starting: joining link room ${room}`);
  const link = new WebSocket(wsUrl(`/v1/link/${encodeURIComponent(room)}`));
  link.binaryType = "arraybuffer";
  sockets.link = link;
  await new Promise((resolve, reject) => {
    link.onopen = resolve;
    link.onerror = () => reject(new Error("cannot open the link"));
  });
  link.onmessage = (e) => {
    if (typeof e.data === "string") {
      const msg = JSON.parse(e.data);
      if (msg.type === "link") {
        fc.peers = msg.peers;
        setStatus(
          msg.peers >= 2
            ? `linked in room ${room}: speak; ${8 * msg.frame_bytes} bits per ${h.latency_ms} ms cross to the other tab`
            : `waiting for another tab to join room ${room}`,
        );
      } else if (msg.type === "error") fail(`link: ${msg.message}`);
      return;
    }
    const tokens = unpackFrames(new Uint8Array(e.data), K, D);
    fc.linkReceived.push(...tokens);
    showTokens(tokens, true);
    if (sockets.dec.readyState === WebSocket.OPEN) sockets.dec.send(Uint16Array.from(tokens).buffer);
  };
  link.onclose = (e) => {
    if (fc.state === "running" && !link.closing) fail(`link closed (code ${e.code})`);
  };
  sockets.enc = await openStream(
    { type: "start", mode: "encode" },
    {
      tokens: (t) => {
        fc.tokens.push(...t);
        tokenBits += t.length * D;
        showTokens(t, false);
        onOutputChunk();
        if (fc.peers >= 2 && link.readyState === WebSocket.OPEN) {
          for (let i = 0; i + K <= t.length; i += K) {
            const frame = packFrame(t.slice(i, i + K), D);
            link.send(frame);
            fc.linkBytesSent += frame.length;
            fc.linkSent.push(...t.slice(i, i + K));
          }
        }
      },
      flushed: flushedHandler,
    },
  );
  fc.ready = { mode: "link", room };
}

function teardown() {
  if (capture) capture.port.postMessage("stop");
  if (media) for (const t of media.getTracks()) t.stop();
  for (const ws of Object.values(sockets)) {
    ws.closing = true;
    if (ws.readyState <= WebSocket.OPEN) ws.close();
  }
  sockets = {};
  capture = null;
  media = null;
  $("start").textContent = "Start";
  $("start").className = "";
  $("mode").disabled = $("voice").disabled = $("room").disabled = false;
}

async function stop() {
  fc.state = "stopping";
  setStatus("stopping: coding the last chunk");
  if (capture) capture.port.postMessage("stop");
  const ws = sockets.stream || sockets.enc;
  if (ws && ws.readyState === WebSocket.OPEN) {
    const done = new Promise((resolve) => {
      onFlushed = resolve;
      setTimeout(resolve, 10000); // a server that never answers does not hang the page
    });
    ws.send(JSON.stringify({ type: "flush" }));
    await done;
  }
  teardown();
  fc.state = "stopped";
  setStatus(fc.flushed ? `stopped: ${fc.flushed.tokens} tokens, ${fc.flushed.samples} samples of audio` : "stopped");
}

$("start").onclick = () => {
  if (fc.state === "running") stop();
  else if (fc.state !== "starting" && fc.state !== "stopping") start();
};
$("mode").onchange = () => {
  const link = $("mode").value === "link";
  $("room-label").hidden = !link;
  $("bps-k").textContent = link ? "bit/s sent over the link" : "bit/s of tokens";
  $("tok-legend").hidden = !link;
  $("hint").textContent = link
    ? "Open this page in two tabs, choose Link and the same room in both: each tab's voice becomes tokens, " +
      "the tokens alone cross the server to the other tab, which decodes them to audio. Use headphones."
    : "Speak into the microphone: your voice goes to the server as 16 kHz audio, becomes tokens, and comes " +
      "back as 24 kHz audio decoded from those tokens alone.";
};
init();
