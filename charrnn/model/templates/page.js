"use strict";
// A charrnn model in the browser: its weights are in this page (the "weights" element, raw bytes),
// its shape and vocabulary in the "model" element. Everything runs here, offline: the cell step
// (LSTM, GRU or RNN, any number of layers) and the sampling (temperature, top-k, top-p, prime,
// stop). Sums are taken in double precision over float32 weights, which agrees with PyTorch's
// float32 to about 1e-6 in probability.

// ---------------------------------------------------------------------------- weights

// The page is windows-1252: each byte of the weights is one character. Bytes 0x80-0x9F read as
// these characters; every other byte reads as the character of the same number.
const WINDOWS_1252 = [0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030,
  0x160, 0x2039, 0x152, 0x8d, 0x17d, 0x8f, 0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013,
  0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178];
const SHIFT = 150; // charrnn's web_page.SHIFT: every byte was written plus this (mod 256)

// The weights' bytes: undo the "=" escapes (byte + 64) and the shift.
function pageBytes(text) {
  const byteOf = new Map(WINDOWS_1252.map((code, i) => [code, 0x80 + i]));
  const bytes = new Uint8Array(text.length);
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    let code = text.charCodeAt(i);
    if (code >= 0x100 || (code >= 0x80 && code < 0xa0)) code = byteOf.get(code);
    if (code === 0x3d) {
      let next = text.charCodeAt(++i);
      if (next >= 0x100 || (next >= 0x80 && next < 0xa0)) next = byteOf.get(next);
      code = (next - 64) & 0xff;
    }
    bytes[n++] = (code - SHIFT) & 0xff;
  }
  return bytes.slice(0, n);
}

function halfToNumber(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * Math.pow(2, -24);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
}

// Every tensor as a Float32Array, as charrnn's dequantize_state makes them: int8 times its
// row's float32 scale (rounded to float32), float16 and bfloat16 widened exactly.
function decodeTensors(tensors, bytes) {
  const buffer = bytes.buffer;
  const raw = {};
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.dtype === "float32") raw[t.name] = new Float32Array(buffer.slice(t.offset, t.offset + 4 * n));
    else if (t.dtype === "int8") raw[t.name] = new Int8Array(buffer, t.offset, n);
    else {
      const halves = new Uint16Array(buffer.slice(t.offset, t.offset + 2 * n));
      const out = new Float32Array(n);
      if (t.dtype === "float16") for (let i = 0; i < n; i++) out[i] = halfToNumber(halves[i]);
      else {
        const words = new Uint32Array(out.buffer);
        for (let i = 0; i < n; i++) words[i] = halves[i] << 16; // bfloat16: the top half of a float32
      }
      raw[t.name] = out;
    }
  }
  const weights = {};
  for (const t of tensors) {
    if (t.name.endsWith(".int8_scale")) continue;
    let data = raw[t.name];
    if (t.dtype === "int8") {
      const scales = raw[t.name + ".int8_scale"], cols = t.shape[1];
      const out = new Float32Array(data.length);
      for (let i = 0; i < data.length; i++) out[i] = Math.fround(data[i] * scales[Math.floor(i / cols)]);
      data = out;
    }
    weights[t.name] = { data: data, shape: t.shape };
  }
  return weights;
}

// ---------------------------------------------------------------------------- the network

const GATES = { lstm: 4, gru: 3, rnn: 1 };

function buildNet(meta, weights) {
  const layers = [];
  for (let l = 0; l < meta.layers; l++) {
    const w = (name) => weights["rnn." + name + "_l" + l].data;
    layers.push({
      wih: w("weight_ih"), whh: w("weight_hh"), bih: w("bias_ih"), bhh: w("bias_hh"),
      inputs: weights["rnn.weight_ih_l" + l].shape[1],
      fromInput: new Float64Array(GATES[meta.cell] * meta.hidden),
      fromHidden: new Float64Array(GATES[meta.cell] * meta.hidden),
    });
  }
  return {
    cell: meta.cell, relu: meta.nonlinearity === "relu", hidden: meta.hidden, embed: meta.embed,
    vocab: meta.symbols.length, embedding: weights["embed.weight"].data, layers: layers,
    input: new Float64Array(meta.embed),
    headWeight: weights["head.weight"].data, headBias: weights["head.bias"].data,
  };
}

// out = W x + b for a row-major W of `cols` columns. Four running sums let the processor
// overlap the multiplications (about twice as fast as one sum).
function affine(w, x, cols, b, out) {
  const whole = cols - (cols % 4);
  for (let r = 0; r < out.length; r++) {
    const base = r * cols;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, j = 0;
    for (; j < whole; j += 4) {
      s0 += w[base + j] * x[j];
      s1 += w[base + j + 1] * x[j + 1];
      s2 += w[base + j + 2] * x[j + 2];
      s3 += w[base + j + 3] * x[j + 3];
    }
    for (; j < cols; j++) s0 += w[base + j] * x[j];
    out[r] = b[r] + (s0 + s1 + (s2 + s3));
  }
}

function sigmoid(x) { return 1 / (1 + Math.exp(-x)); }

function zeroState(net) {
  const make = () => net.layers.map(() => new Float64Array(net.hidden));
  return { h: make(), c: net.cell === "lstm" ? make() : null };
}

// Feed one symbol: PyTorch's equations (gate order i f g o for the LSTM, r z n for the GRU).
function advance(net, state, id) {
  const H = net.hidden;
  // Copied into a Float64Array: affine then always sees one kind of array, which V8 compiles
  // far better than a call site that sees two.
  let x = net.input;
  for (let j = 0; j < net.embed; j++) x[j] = net.embedding[id * net.embed + j];
  for (let l = 0; l < net.layers.length; l++) {
    const layer = net.layers[l], h = state.h[l], gi = layer.fromInput, gh = layer.fromHidden;
    affine(layer.wih, x, layer.inputs, layer.bih, gi);
    affine(layer.whh, h, H, layer.bhh, gh);
    if (net.cell === "lstm") {
      const c = state.c[l];
      for (let j = 0; j < H; j++) {
        const i = sigmoid(gi[j] + gh[j]), f = sigmoid(gi[H + j] + gh[H + j]);
        const g = Math.tanh(gi[2 * H + j] + gh[2 * H + j]), o = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * Math.tanh(c[j]);
      }
    } else if (net.cell === "gru") {
      for (let j = 0; j < H; j++) {
        const r = sigmoid(gi[j] + gh[j]), z = sigmoid(gi[H + j] + gh[H + j]);
        const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
        h[j] = (1 - z) * n + z * h[j];
      }
    } else {
      for (let j = 0; j < H; j++) {
        const a = gi[j] + gh[j];
        h[j] = net.relu ? Math.max(a, 0) : Math.tanh(a);
      }
    }
    x = h;
  }
}

function logitsOf(net, state) {
  const out = new Float64Array(net.vocab);
  affine(net.headWeight, state.h[state.h.length - 1], net.hidden, net.headBias, out);
  return out;
}

function softmax(logits) {
  let top = -Infinity;
  for (const v of logits) if (v > top) top = v;
  const out = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += (out[i] = Math.exp(logits[i] - top));
  for (let i = 0; i < out.length; i++) out[i] /= total;
  return out;
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

// ---------------------------------------------------------------------------- sampling

// Temperature, then top-k, then top-p, as charrnn's filter_logits: the probabilities drawn from.
function distribution(logits, options) {
  const scaled = logits.map((v) => v / options.temperature);
  if (options.topK && options.topK < scaled.length) {
    const kth = Array.from(scaled).sort((a, b) => b - a)[options.topK - 1];
    for (let i = 0; i < scaled.length; i++) if (scaled[i] < kth) scaled[i] = -Infinity;
  }
  if (options.topP && options.topP < 1) {
    const probs = softmax(scaled);
    const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]);
    let before = 0;
    for (const i of order) {
      if (before >= options.topP) scaled[i] = -Infinity; // those more likely already reach top-p
      before += probs[i];
    }
  }
  return softmax(scaled);
}

// mulberry32: a small seeded generator, so a seed gives the same text again in this page.
function seededRandom(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function draw(probs, random) {
  let u = random(), last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] > 0) last = i;
    if ((u -= probs[i]) < 0) return i;
  }
  return last; // rounding left a sliver: the last possible symbol
}

// ---------------------------------------------------------------------------- text

function prepareText(meta, text) {
  const prep = meta.prep;
  text = text.replace(/\r\n?/g, "\n");
  if (meta.bytes) return text;
  const form = prep.normalize !== "none" ? prep.normalize.toUpperCase() : null;
  if (form) text = text.normalize(form);
  if (prep.ascii) text = text.normalize("NFKD").replace(/[^\x00-\x7f]/g, "");
  if (prep.lowercase) text = text.toLowerCase();
  if (form) text = text.normalize(form);
  return text;
}

// The ids of a text, and the characters the model does not know (left out).
function encode(meta, text) {
  const index = new Map(meta.symbols.map((s, i) => [s, i]));
  const points = meta.bytes ? Array.from(new TextEncoder().encode(text)) : Array.from(text, (ch) => ch.codePointAt(0));
  const ids = [], unknown = [];
  for (const p of points) {
    if (index.has(p)) ids.push(index.get(p));
    else if (meta.unknown !== null) ids.push(meta.unknown);
    else unknown.push(meta.bytes ? "0x" + p.toString(16) : String.fromCodePoint(p));
  }
  return { ids: ids, unknown: unknown };
}

function textDecoder(meta) {
  if (!meta.bytes) return (id) => String.fromCodePoint(meta.symbols[id]);
  const decoder = new TextDecoder("utf-8");
  return (id) => decoder.decode(new Uint8Array([meta.symbols[id]]), { stream: true });
}

// New text, one piece per symbol drawn; the stop text and what follows it are never yielded.
function* generate(meta, net, ids, options) {
  const state = zeroState(net);
  for (const id of ids) advance(net, state, id);
  const random = seededRandom(options.seed);
  const decode = textDecoder(meta);
  const stop = options.stop || "";
  let pending = "";
  for (let n = 0; n < options.length; n++) {
    const logits = logitsOf(net, state);
    const id = options.greedy ? argmax(logits) : draw(distribution(logits, options), random);
    pending += decode(id);
    if (stop) {
      const cut = pending.indexOf(stop);
      if (cut >= 0) { yield pending.slice(0, cut); return; }
      const safe = Math.max(0, pending.length - (stop.length - 1)); // may begin the stop text
      if (safe) { yield pending.slice(0, safe); pending = pending.slice(safe); }
    } else if (pending) { yield pending; pending = ""; }
    advance(net, state, id);
  }
  if (pending) yield pending;
}

// ---------------------------------------------------------------------------- the page

const $ = (id) => document.getElementById(id);

function showModel(meta, weightBytes) {
  const s = meta.summary, e = meta.export;
  const format = e.quantize ? e.quantize + " matrices, " + e.dtype + " vectors" : e.dtype;
  const number = (v, d) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en", { maximumFractionDigits: d }));
  $("name").textContent = meta.name;
  const rows = [
    ["network", s.layers + " x " + s.hidden + " " + s.cell.toUpperCase() + ", embedding " + s.embed],
    ["parameters", number(meta.parameters, 0)],
    ["weights in this page", number(weightBytes, 0) + " bytes (" + format + ")"],
    ["vocabulary", meta.symbols.length + (meta.bytes ? " bytes" : " characters")],
    ["trained", number(s.steps, 0) + " steps, " + number(s.chars_seen, 0) + " characters, " + number(s.training_seconds, 0) + " s"],
    ["best validation loss", number(s.best_val_loss, 4) + " nats/char"],
    ["corpus", s.corpus.join(", ") || "-"],
  ];
  for (const [key, value] of rows) {
    const tr = $("summary").insertRow();
    tr.insertCell().textContent = key;
    tr.insertCell().textContent = value;
  }
}

function readOptions() {
  const num = (id) => ($(id).value.trim() === "" ? null : Number($(id).value));
  const seed = num("seed");
  return {
    length: num("length") || 0, temperature: num("temperature") || 1, topK: num("topk"), topP: num("topp"),
    greedy: $("greedy").checked, stop: $("stop").value.replace(/\\n/g, "\n").replace(/\\t/g, "\t"),
    seed: seed === null ? Math.floor(Math.random() * 4294967296) : seed,
  };
}

// Sample in slices of ~15 ms, so the page stays responsive and the text appears as it grows.
function startSampling(meta, net) {
  let running = null;
  $("stop-button").onclick = () => { if (running) running.stopped = true; };
  $("controls").onsubmit = (event) => {
    event.preventDefault();
    if (running) running.stopped = true;
    const options = readOptions();
    const prime = prepareText(meta, $("prime").value);
    const encoded = encode(meta, prime);
    $("output").textContent = prime;
    $("status").textContent = encoded.unknown.length ? "left out of the prime (not in the vocabulary): " + encoded.unknown.join(" ") : "";
    const job = (running = { stopped: false, pieces: generate(meta, net, encoded.ids, options) });
    const started = performance.now();
    let count = 0;
    const slice = () => {
      const until = performance.now() + 15;
      let chunk = "", done = job.stopped;
      while (!done && performance.now() < until) {
        const next = job.pieces.next();
        if (next.done) done = true;
        else { chunk += next.value; count++; }
      }
      $("output").textContent += chunk;
      const rate = count / Math.max((performance.now() - started) / 1000, 1e-3);
      $("status").textContent = count + " characters, " + Math.round(rate) + " chars/s" + (done ? "" : "...");
      if (!done) setTimeout(slice, 0);
      else if (running === job) running = null;
    };
    slice();
  };
}

// #test={"prime": ..., "greedy": N, "speed": N, "options": {...}}: write the prime's per-character
// probabilities, a greedy continuation and a timed sample (N characters at temperature 1, or as
// `options` say) into #test-result as JSON: charrnn's tests and benchmark read it.
function selfTest(meta, net, spec) {
  const ids = encode(meta, prepareText(meta, spec.prime)).ids;
  const decode = textDecoder(meta);
  const state = zeroState(net), positions = [];
  ids.forEach((id, k) => {
    if (k > 0) {
      const probs = softmax(logitsOf(net, state));
      const top = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]).slice(0, 5);
      positions.push({ p: probs[id], top5: top.map((i) => [String.fromCodePoint(meta.symbols[i]), probs[i]]) });
    }
    advance(net, state, id);
  });
  const run = (options) => {
    const started = performance.now();
    const text = Array.from(generate(meta, net, ids, options)).join("");
    return { text: text, seconds: (performance.now() - started) / 1000 };
  };
  const greedy = run({ length: spec.greedy || 0, greedy: true });
  const timed = run(Object.assign({ length: spec.speed || 0, temperature: 1, seed: 1 }, spec.options || {}));
  $("test-result").textContent = JSON.stringify({
    positions: positions, greedy: greedy.text, sample: timed.text, sample_seconds: timed.seconds,
  });
}

function main() {
  const meta = JSON.parse($("model").textContent);
  const bytes = pageBytes($("weights").textContent);
  const net = buildNet(meta, decodeTensors(meta.tensors, bytes));
  showModel(meta, bytes.length);
  startSampling(meta, net);
  if (location.hash.startsWith("#test=")) selfTest(meta, net, JSON.parse(decodeURIComponent(location.hash.slice(6))));
  // #generate=PRIME: press Generate with that prime once the page is up (a link can start it).
  if (location.hash.startsWith("#generate=")) {
    $("prime").value = decodeURIComponent(location.hash.slice(10));
    $("controls").requestSubmit();
  }
}

main();
