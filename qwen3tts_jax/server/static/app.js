// The page's client: fills the pickers from the server, streams speech as raw PCM (s16le, 24 kHz,
// mono) from POST /v1/audio/speech and plays each piece with Web Audio as it arrives, then keeps
// the whole clip as a WAV for replay. Plain JS, no build step.
"use strict";

const SAMPLE_RATE = 24000;
const $ = (id) => document.getElementById(id);

// What the last synthesis received (read by the browser test and handy in the console).
window.qwen3tts = { bytes: 0, samples: 0, chunks: 0, ttfa: null, rt: null, done: false, error: null };

let modelInfo = null;
let controller = null;

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function errorMessage(resp) {
  try {
    const body = await resp.json();
    const e = body.error || {};
    return `${resp.status}: ${e.message || resp.statusText}${e.param ? ` (field ${e.param})` : ""}`;
  } catch (_) {
    return `${resp.status} ${resp.statusText}`;
  }
}

async function loadVoices() {
  const resp = await fetch("/v1/audio/voices");
  if (!resp.ok) throw new Error(await errorMessage(resp));
  const body = await resp.json();
  const select = $("voice");
  const previous = select.value;
  select.innerHTML = "";
  const names = [...body.voices, ...body.uploaded_voices.map((v) => v.name)];
  for (const name of names) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = name;
    select.appendChild(opt);
  }
  if (names.includes(previous)) select.value = previous;
  const design = modelInfo && modelInfo.task_type === "VoiceDesign";
  select.disabled = design || names.length === 0;
  if (design) select.innerHTML = "<option value=''>(described by the instructions)</option>";
  return names;
}

async function init() {
  // The server answers 503 until its model is loaded and warmed up.
  for (;;) {
    const resp = await fetch("/health");
    if (resp.ok) break;
    const body = await resp.json().catch(() => ({}));
    setStatus(`server starting: ${body.reason || resp.status}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  const models = await (await fetch("/v1/models")).json();
  modelInfo = models.data[0];
  $("model").textContent = `${modelInfo.id} · ${modelInfo.task_type}`;
  const lang = $("language");
  lang.innerHTML = "";
  for (const l of modelInfo.languages) {
    const opt = document.createElement("option");
    opt.value = opt.textContent = l;
    lang.appendChild(opt);
  }
  $("upload-card").hidden = modelInfo.task_type !== "Base";
  const names = await loadVoices();
  if (modelInfo.task_type === "Base" && names.length === 0) setStatus("ready: upload a reference voice first");
  else setStatus("ready");
}

function wavBlob(pcm) {
  const header = new DataView(new ArrayBuffer(44));
  const text = (off, s) => [...s].forEach((c, i) => header.setUint8(off + i, c.charCodeAt(0)));
  text(0, "RIFF"); header.setUint32(4, 36 + pcm.byteLength, true); text(8, "WAVE");
  text(12, "fmt "); header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, SAMPLE_RATE, true); header.setUint32(28, 2 * SAMPLE_RATE, true);
  header.setUint16(32, 2, true); header.setUint16(34, 16, true);
  text(36, "data"); header.setUint32(40, pcm.byteLength, true);
  return new Blob([header.buffer, pcm], { type: "audio/wav" });
}

async function speak() {
  const text = $("text").value;
  const stats = (window.qwen3tts = { bytes: 0, samples: 0, chunks: 0, ttfa: null, rt: null, done: false, error: null });
  const body = { input: text, language: $("language").value, stream: true, stream_format: "audio", response_format: "pcm" };
  if (modelInfo.task_type !== "VoiceDesign" && $("voice").value) body.voice = $("voice").value;
  if ($("instructions").value.trim()) body.instructions = $("instructions").value;
  // Numbers go as JSON numbers; a bad one comes back as the server's 422 naming the field.
  if ($("seed").value.trim()) body.seed = Number($("seed").value);
  if ($("max-new-tokens").value.trim()) body.max_new_tokens = Number($("max-new-tokens").value);
  if ($("greedy").checked) { body.do_sample = false; body.subtalker_dosample = false; }
  $("speak").disabled = true;
  $("stop").disabled = false;
  $("result").hidden = true;
  setStatus("synthesizing…");
  let ctx = null;
  try {
    ctx = new AudioContext({ sampleRate: SAMPLE_RATE });
    await ctx.resume();
  } catch (_) {
    ctx = null; // no audio output here: still receive (and keep) the audio
  }
  let playAt = 0;
  const pieces = [];
  let carry = null; // an odd byte split across network chunks
  const t0 = performance.now();
  controller = new AbortController();
  try {
    const resp = await fetch("/v1/audio/speech", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: controller.signal,
    });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const reader = resp.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let bytes = value;
      if (carry !== null) {
        bytes = new Uint8Array(value.length + 1);
        bytes[0] = carry;
        bytes.set(value, 1);
        carry = null;
      }
      if (bytes.length % 2) {
        carry = bytes[bytes.length - 1];
        bytes = bytes.subarray(0, bytes.length - 1);
      }
      if (!bytes.length) continue;
      if (stats.ttfa === null) stats.ttfa = (performance.now() - t0) / 1000;
      const copy = bytes.slice();
      pieces.push(copy);
      const ints = new Int16Array(copy.buffer);
      stats.bytes += copy.length;
      stats.samples += ints.length;
      stats.chunks += 1;
      if (ctx) {
        const buffer = ctx.createBuffer(1, ints.length, SAMPLE_RATE);
        const ch = buffer.getChannelData(0);
        for (let i = 0; i < ints.length; i++) ch[i] = ints[i] / 32768;
        const src = ctx.createBufferSource();
        src.buffer = buffer;
        src.connect(ctx.destination);
        playAt = Math.max(playAt, ctx.currentTime);
        src.start(playAt);
        playAt += buffer.duration;
      }
      setStatus(`streaming… ${(stats.samples / SAMPLE_RATE).toFixed(2)} s received`);
    }
    const seconds = stats.samples / SAMPLE_RATE;
    const total = (performance.now() - t0) / 1000;
    stats.rt = seconds / total;
    stats.done = true;
    const all = new Uint8Array(stats.bytes);
    let off = 0;
    for (const p of pieces) { all.set(p, off); off += p.length; }
    $("result").src = URL.createObjectURL(wavBlob(all));
    $("result").hidden = false;
    const ttfa = stats.ttfa === null ? "–" : `${stats.ttfa.toFixed(2)} s`;
    setStatus(`done · ${seconds.toFixed(2)} s of audio · first audio after ${ttfa} · ${stats.rt.toFixed(2)}×RT`);
  } catch (err) {
    stats.error = String(err.message || err);
    setStatus(err.name === "AbortError" ? "stopped" : `error ${stats.error}`, err.name !== "AbortError");
  } finally {
    $("speak").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
}

async function upload(event) {
  event.preventDefault();
  const status = $("upload-status");
  status.classList.remove("error");
  status.textContent = "uploading…";
  $("upload-button").disabled = true;
  try {
    const form = new FormData($("upload"));
    if (!form.get("ref_text")) form.delete("ref_text");
    const resp = await fetch("/v1/audio/voices", { method: "POST", body: form });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const { voice } = await resp.json();
    status.textContent = `uploaded ${voice.name} (${voice.x_vector_only ? "x-vector only" : "ICL"})`;
    await loadVoices();
    $("voice").value = voice.name;
    setStatus("ready");
  } catch (err) {
    status.textContent = `error ${err.message || err}`;
    status.classList.add("error");
  } finally {
    $("upload-button").disabled = false;
  }
}

$("speak").addEventListener("click", speak);
$("stop").addEventListener("click", () => controller && controller.abort());
$("upload").addEventListener("submit", upload);
init().catch((err) => setStatus(`error ${err.message || err}`, true));
