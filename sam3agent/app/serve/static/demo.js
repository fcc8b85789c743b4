// The live demo page of `sam3agent serve http`.
//
// It posts the chosen image and the query to v1/segment/stream (multipart, like POST /v1/segment)
// with fetch(), reads the Server-Sent Events of the answer from a ReadableStream reader, and renders
// each event as it arrives: a card per turn, a block per model call, the numbered pictures, the
// verdicts, the failures fed back, then the answer, the overlay and the download links.
//
// fetch() rather than EventSource: EventSource can neither POST nor send the API key header.
// Every text from the model, the user or the server goes in with textContent, never as HTML, and
// every URL the page uses is this server's or a data:/blob: URL (the server's
// Content-Security-Policy refuses anything else).
"use strict";

(() => {
  const STREAM_URL = "v1/segment/stream"; // relative: works behind a proxy that serves the app under a prefix
  const KEY_STORAGE = "sam3agent.apiKey";
  const byId = (id) => document.getElementById(id);
  const form = byId("run-form");
  const fileInput = byId("image-input");
  const drop = byId("drop");
  const preview = byId("preview");
  const dropText = byId("drop-text");
  const queryInput = byId("query");
  const keyInput = byId("api-key");
  const runButton = byId("run");
  const stopButton = byId("stop");
  const statusLine = byId("status");
  const notice = byId("notice");
  const timeline = byId("timeline");
  let chosen = null; // the File to send
  let previewUrl = null; // its blob: URL, revoked when another image is chosen
  let controller = null; // the AbortController of the run in flight

  /** A new element with a class and a text (inserted as text, never parsed as HTML). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function say(text) {
    statusLine.textContent = text;
  }

  function warn(text, kind) {
    notice.textContent = text;
    notice.className = kind ? `notice ${kind}` : "notice";
    notice.hidden = false;
  }

  // The API key: typed once per tab, kept in sessionStorage (gone when the tab closes).
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("input", () => {
    const key = keyInput.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    keyInput.classList.remove("wanted");
  });

  function choose(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      warn(`${file.name} is not an image (${file.type}).`);
      return;
    }
    chosen = file;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
    dropText.hidden = true;
    say(`${file.name || "image"} (${Math.ceil(file.size / 1024)} KB). Type a query and press Segment.`);
  }

  fileInput.addEventListener("change", () => choose(fileInput.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer && event.dataTransfer.files[0]);
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  stopButton.addEventListener("click", () => controller && controller.abort());

  async function run() {
    const query = queryInput.value.trim();
    if (!chosen) return warn("Choose an image first: drop one on the box or click it.");
    if (!query) return warn("Type what to segment first.");
    notice.hidden = true;
    const body = new FormData();
    body.append("image", chosen, chosen.name || "image");
    body.append("query", query);
    body.append("overlay", "true");
    const headers = { Accept: "text/event-stream" };
    const key = keyInput.value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    controller = new AbortController();
    runButton.disabled = true;
    stopButton.disabled = false;
    say("Sending the image…");
    const view = new RunView();
    try {
      const response = await fetch(STREAM_URL, {
        method: "POST", body, headers, signal: controller.signal, credentials: "omit", cache: "no-store",
      });
      if (!response.ok) return await refused(response, Boolean(key));
      const type = response.headers.get("content-type") || "";
      if (!type.startsWith("text/event-stream")) return warn(`The server answered ${type || "no content type"}, not an event stream.`);
      say("Running…");
      await readEvents(response.body, (name, data) => view.handle(name, data));
      if (!view.finished) warn("The stream ended before the result arrived (the server stopped or the connection broke).");
    } catch (error) {
      if (error.name === "AbortError") say("Stopped: closing the stream cancels the run on the server. Press Segment to start again.");
      else warn(`The request failed: ${error.message}`);
    } finally {
      runButton.disabled = false;
      stopButton.disabled = true;
      controller = null;
    }
  }

  /** Explain a refused request: 401 asks for the key; anything else shows the server's message. */
  async function refused(response, sentKey) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = String(body.error.message);
    } catch (_) {
      // not JSON: keep the status line
    }
    say("");
    if (response.status === 401) {
      keyInput.classList.add("wanted");
      keyInput.focus();
      return warn(sentKey
        ? "The server refused this API key. Check it in the API key field and press Segment again."
        : "This server needs an API key. Enter it in the API key field above and press Segment again.", "key");
    }
    if (response.status === 404) return warn(`This server has no streaming endpoint (POST ${STREAM_URL}): ${message}`);
    return warn(`The server refused the request (${response.status}): ${message}`);
  }

  /**
   * Read Server-Sent Events from a byte stream and call onEvent(name, data) for each one.
   * An event is lines of `field: value` ended by a blank line; `data` lines join with "\n" and hold
   * JSON; lines starting with ":" are comments (keep-alives). Line ends may be \n, \r\n or \r.
   */
  async function readEvents(stream, onEvent) {
    const reader = stream.getReader();
    const decoder = new TextDecoder(); // UTF-8; {stream: true} keeps characters split across chunks whole
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      let text = buffer + decoder.decode(value || new Uint8Array(0), { stream: !done });
      let held = ""; // a \r at the very end may be the first half of \r\n: wait for the next chunk
      if (!done && text.endsWith("\r")) {
        held = "\r";
        text = text.slice(0, -1);
      }
      text = text.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = text.indexOf("\n\n")) >= 0) {
        dispatch(text.slice(0, cut), onEvent);
        text = text.slice(cut + 2);
      }
      buffer = text + held;
      if (done) return; // an event without its closing blank line is incomplete: dropped, as the SSE spec says
    }
  }

  function dispatch(block, onEvent) {
    let name = "";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let payload;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch (_) {
      payload = { type: "error", error: { type: "bad_event", message: `an event that is not JSON: ${data.join(" ").slice(0, 200)}` } };
      name = "error";
    }
    onEvent(name || (payload && payload.type) || "message", payload);
  }

  /** The pixels of a COCO RLE mask: the sum of its odd runs (compressed counts decoded as pycocotools does). */
  function rleArea(rle) {
    if (!rle) return null;
    let counts = rle.counts;
    if (typeof counts === "string") {
      const text = counts;
      counts = [];
      for (let p = 0; p < text.length;) {
        let x = 0;
        let k = 0;
        let more = true;
        while (more && p < text.length) {
          const c = text.charCodeAt(p++) - 48; // 6 bits a character: 5 of value, 1 "more follows"
          x |= (c & 0x1f) << (5 * k++);
          more = (c & 0x20) !== 0;
          if (!more && (c & 0x10)) x |= -1 << (5 * k); // sign-extend a negative delta
        }
        if (counts.length > 2) x += counts[counts.length - 2]; // runs after the second are deltas
        counts.push(x);
      }
    }
    if (!Array.isArray(counts)) return null;
    return counts.reduce((sum, run, i) => sum + (i % 2 ? run : 0), 0);
  }

  const isImageUrl = (url) => typeof url === "string" && url.startsWith("data:image/");
  const fmt = (x, digits) => (typeof x === "number" ? x.toFixed(digits) : "–");

  /** The timeline and the answer panel of one run. */
  class RunView {
    constructor() {
      this.turns = new Map(); // turn number -> its section
      this.calls = new Map(); // "turn/purpose/mask" -> the call's block
      this.finished = false;
      timeline.replaceChildren();
      byId("answer").hidden = true;
      byId("overlay").hidden = true;
      byId("overlay-caption").textContent = "";
      byId("masks").tBodies[0].replaceChildren();
      for (const id of ["download-png", "download-json"]) byId(id).hidden = true;
    }

    handle(name, data) {
      const handler = this[`on_${name}`];
      if (typeof handler === "function" && data && typeof data === "object") handler.call(this, data);
    }

    turn(number) {
      let section = this.turns.get(number);
      if (!section) {
        section = el("section", "turn");
        section.dataset.turn = String(number);
        section.append(el("h3", "", `Turn ${number}`));
        timeline.append(section);
        this.turns.set(number, section);
      }
      return section;
    }

    call(turn, purpose, maskId) {
      const key = `${turn}/${purpose}/${maskId ?? ""}`;
      let block = this.calls.get(key);
      if (!block) {
        block = el("article", `call ${purpose}`);
        block.dataset.purpose = purpose;
        if (maskId !== null && maskId !== undefined) block.dataset.mask = String(maskId);
        const head = el("div", "call-head");
        head.append(el("span", `badge ${purpose}`, purpose === "verify" ? `check mask ${maskId}` : "model"));
        block.append(head);
        this.turn(turn).append(block);
        this.calls.set(key, block);
      }
      return block;
    }

    planCall(turn) {
      return this.call(turn, "plan", null);
    }

    on_run_started(d) {
      const section = el("section", "turn run");
      const head = el("h3", "run", "Query: ");
      head.append(el("q", "", d.query));
      section.append(head);
      if (d.image) section.append(el("div", "muted", `image ${d.image.width} × ${d.image.height} pixels`));
      timeline.append(section);
    }

    on_model_call_started(d) {
      const block = this.call(d.turn, d.purpose, d.mask_id);
      block.classList.add("waiting");
      const head = block.querySelector(".call-head");
      head.append(el("span", "spinner"), el("span", "wait", "waiting for the model…"));
      say(d.purpose === "verify" ? `Turn ${d.turn}: checking mask ${d.mask_id}…` : `Turn ${d.turn}: asking the model…`);
    }

    on_model_call_finished(d) {
      const block = this.call(d.turn, d.purpose, d.mask_id);
      block.classList.remove("waiting");
      for (const node of block.querySelectorAll(".spinner, .wait")) node.remove();
      block.querySelector(".call-head").append(el("span", "", `answered in ${fmt(d.seconds, 1)} s`));
      block.append(el("pre", "reply", d.reply || "(an empty reply)"));
    }

    on_tool_call(d) {
      const line = el("div", "tool", "calls ");
      const args = d.arguments && typeof d.arguments === "object" ? d.arguments : {};
      const text = Object.entries(args).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
      line.append(el("code", "", `${d.name}(${text})`));
      this.planCall(d.turn).append(line);
    }

    on_masks_found(d) {
      const masks = Array.isArray(d.masks) ? d.masks : [];
      const box = el("div", "found");
      const n = `${masks.length} mask${masks.length === 1 ? "" : "s"}`;
      const line = el("div", "");
      if (d.phrase !== null && d.phrase !== undefined) {
        line.append(masks.length ? `SAM 3 found ${n} for ` : "SAM 3 found nothing for ", el("span", "phrase", d.phrase));
      } else {
        line.textContent = `${masks.length ? n : "no masks"} left after ${d.tool}`;
      }
      box.append(line);
      if (isImageUrl(d.image)) {
        const figure = el("figure", "marks");
        const img = el("img");
        img.alt = `turn ${d.turn}: the numbered masks the model sees`;
        img.src = d.image;
        figure.append(img);
        box.append(figure);
      }
      const chips = el("div", "chips");
      for (const m of masks) chips.append(el("span", "chip", `mask ${m.id} · score ${fmt(m.score, 2)}`));
      box.append(chips);
      this.turn(d.turn).append(box); // after the call (and, for examine_each_mask, after the checks)
    }

    on_verification(d) {
      const block = this.call(d.turn, "verify", d.mask_id);
      block.dataset.verdict = String(d.verdict);
      block.querySelector(".call-head").append(el("span", `badge verdict ${d.verdict}`, d.verdict));
    }

    on_failure(d) {
      const box = el("div", "failure", `Fed back to the model (${d.kind}): ${d.message}`);
      this.turn(d.turn).append(box);
    }

    on_answer(d) {
      byId("answer").hidden = false;
      const badge = byId("answer-status");
      badge.textContent = String(d.status);
      badge.className = `badge ${d.status}`;
      const count = typeof d.count === "number" ? ` (${d.count} mask${d.count === 1 ? "" : "s"})` : "";
      byId("answer-text").textContent = `${d.final_text || ""}${count}`.trim();
      say(`Done: ${d.status}${count}.`);
    }

    on_result(d) {
      this.finished = true;
      if (byId("answer").hidden) this.on_answer({ status: d.status, final_text: d.reason, count: d.count });
      const overlay = byId("overlay");
      if (typeof d.overlay_png === "string") {
        overlay.src = `data:image/png;base64,${d.overlay_png}`;
        overlay.hidden = false;
        byId("overlay-caption").textContent = d.reason ? `The answer's masks. ${d.reason}` : "The answer's masks.";
      }
      const masks = (Array.isArray(d.masks) ? d.masks : Array.isArray(d.detections) ? d.detections : [])
        .map((m, i) => Object.assign({ id: i + 1 }, m));
      const rows = byId("masks").tBodies[0];
      for (const m of masks) {
        const row = el("tr");
        const box = Array.isArray(m.box_xyxy) ? m.box_xyxy.map((v) => Math.round(v)).join(", ") : "–";
        for (const cell of [m.id, m.phrase ?? "–", fmt(m.score, 3), box, m.area ?? rleArea(m.rle) ?? "–"]) row.append(el("td", "", cell));
        rows.append(row);
      }
      if (typeof d.mask_png === "string") {
        const png = byId("download-png");
        png.href = `data:image/png;base64,${d.mask_png}`;
        png.hidden = false;
      }
      const image = d.image ? { width: d.image.width, height: d.image.height } : null;
      const json = JSON.stringify({ query: d.query, status: d.status, count: masks.length, image, masks }, null, 1);
      const link = byId("download-json");
      link.href = `data:application/json;charset=utf-8,${encodeURIComponent(json)}`;
      link.hidden = false;
    }

    on_error(d) {
      this.finished = true;
      const error = d.error || {};
      warn(`The run failed (${error.type || "error"}): ${error.message || "no message"}`);
      say("Failed.");
    }
  }
})();
