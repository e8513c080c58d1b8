// AudioWorklet processors of the focalcodec page: microphone capture resampled to the codec's
// input rate in fixed blocks, and playback of the codec's output resampled to the device rate.
// `sampleRate` is the AudioContext's rate (a global of the AudioWorkletGlobalScope).

// Streaming windowed-sinc resampler, any ratio. Low-pass at 95 % of the lower Nyquist
// frequency, 16 zero crossings each side, Blackman window; delay = `half` input samples.
class Resampler {
  constructor(rateIn, rateOut, zeroCrossings = 16) {
    this.step = rateIn / rateOut; // input samples per output sample
    this.fc = 0.5 * Math.min(1, rateOut / rateIn) * 0.95; // cut-off, cycles per input sample
    this.half = Math.ceil(zeroCrossings / (2 * this.fc)); // kernel half-width, input samples
    this.buf = new Float32Array(0); // input history
    this.t = 0; // position of the next output sample in `buf`
    this.identity = rateIn === rateOut;
  }

  kernel(x) {
    const r = x / this.half;
    if (r <= -1 || r >= 1) return 0;
    const w = 0.42 + 0.5 * Math.cos(Math.PI * r) + 0.08 * Math.cos(2 * Math.PI * r);
    const a = 2 * this.fc * x;
    const sinc = a === 0 ? 1 : Math.sin(Math.PI * a) / (Math.PI * a);
    return 2 * this.fc * sinc * w;
  }

  push(input) {
    if (this.identity) return Float32Array.from(input);
    const buf = new Float32Array(this.buf.length + input.length);
    buf.set(this.buf);
    buf.set(input, this.buf.length);
    const out = [];
    // Before the first sample the signal is taken as zeros (indices below 0 are skipped).
    while (this.t + this.half < buf.length) {
      const center = this.t;
      const lo = Math.max(0, Math.ceil(center - this.half));
      const hi = Math.floor(center + this.half);
      let acc = 0;
      for (let k = lo; k <= hi; k++) acc += buf[k] * this.kernel(center - k);
      out.push(acc);
      this.t += this.step;
    }
    const drop = Math.max(0, Math.floor(this.t - this.half) - 1);
    this.buf = buf.slice(drop);
    this.t -= drop;
    return Float32Array.from(out);
  }
}

// Microphone -> `rate` Hz, posted to the page in blocks of `block` samples (Float32Array).
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { rate, block } = options.processorOptions;
    this.resampler = new Resampler(sampleRate, rate);
    this.block = block;
    this.pending = new Float32Array(block);
    this.filled = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (!this.running) return false;
    if (!input || input.length === 0) return true;
    let mono = input[0];
    if (input.length > 1) {
      mono = new Float32Array(input[0].length);
      for (const ch of input) for (let i = 0; i < mono.length; i++) mono[i] += ch[i] / input.length;
    }
    const y = this.resampler.push(mono);
    let i = 0;
    while (i < y.length) {
      const n = Math.min(this.block - this.filled, y.length - i);
      this.pending.set(y.subarray(i, i + n), this.filled);
      this.filled += n;
      i += n;
      if (this.filled === this.block) {
        this.port.postMessage(this.pending, [this.pending.buffer]);
        this.pending = new Float32Array(this.block);
        this.filled = 0;
      }
    }
    return true;
  }
}

// Codec output at `rate` Hz (Float32Array messages) -> the device, through a jitter buffer:
// playback starts (and restarts after running dry) once `prebufferMs` of audio is queued.
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { rate, prebufferMs } = options.processorOptions;
    this.resampler = new Resampler(rate, sampleRate);
    this.queue = [];
    this.offset = 0; // read position in queue[0]
    this.buffered = 0; // samples queued, at the device rate
    this.prebuffer = Math.round((prebufferMs * sampleRate) / 1000);
    this.playing = false;
    this.underruns = 0;
    this.frames = 0;
    this.port.onmessage = (e) => {
      const y = this.resampler.push(e.data);
      if (y.length) {
        this.queue.push(y);
        this.buffered += y.length;
      }
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.buffered >= this.prebuffer) this.playing = true;
    let i = 0;
    while (this.playing && i < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), i);
      i += n;
      this.offset += n;
      this.buffered -= n;
      if (this.offset === head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    if (i < out.length) {
      out.fill(0, i);
      if (this.playing) {
        this.playing = false;
        this.underruns++;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (++this.frames % 64 === 0) {
      this.port.postMessage({ bufferedMs: (1000 * this.buffered) / sampleRate, underruns: this.underruns });
    }
    return true;
  }
}

registerProcessor("focalcodec-capture", CaptureProcessor);
registerProcessor("focalcodec-playback", PlaybackProcessor);
