// The playground page: plain JavaScript, no dependencies, served by the service itself.
//
// The API key is kept in sessionStorage (this tab only) and sent in the X-API-Key header of the
// page's own requests. Progress comes from the job's Server-Sent Events stream, read with fetch():
// EventSource cannot send headers, and the key must never appear in a URL.
"use strict";

(() => {
  const API = "api/v1";
  const KEY_STORE = "capability-service.playground.api-key";
  const FINAL = new Set(["completed", "failed", "cancelled"]);
  const TYPE_LABELS = {
    background_replacement: "Background replacement",
    batch_optimization: "Batch optimization",
    image_enhancement: "Image enhancement",
  };
  const TYPE_HELP = {
    background_replacement: "The product, unchanged, on a new background described by the prompt (1500×2000 by default).",
    batch_optimization: "Resized to the longest side and re-encoded small.",
    image_enhancement: "Sharper, cleaner, better contrast; optionally upscaled 2×.",
  };
  // Words shown beside the schema's own names, defaults and limits.
  const FIELD_HELP = {
    backgroundPrompt: "What the new background looks like, e.g. \"light grey studio\", \"soft blue gradient\", \"#f5f5dc\".",
    negativePrompt: "What the background must not contain (remote model only).",
    quality: "Encoder preset.",
    format: "Output format.",
    seed: "Same seed, same picture (remote model only). Empty for random.",
    mode: "composite keeps the product's own pixels; generative lets the remote model redraw the photo.",
    backgroundImageUrl: "Use this image as the background instead of the prompt.",
    padding: "Space kept around the product, as a share of each side.",
    shadow: "A soft contact shadow under the product.",
    maxSize: "Longest side of the result, in pixels.",
    maintainAspect: "Keep the proportions (otherwise the result is maxSize × maxSize).",
    enhancementLevel: "Strength of the enhancement.",
    sharpen: "Sharpen details.",
    denoise: "Reduce noise.",
    upscale: "Double the width and height.",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    keyForm: $("key-form"), keyInput: $("api-key"), forgetKey: $("forget-key"), keyStatus: $("key-status"),
    jobType: $("job-type"), jobTypeHelp: $("job-type-help"), optionsForm: $("options-form"), options: $("options"),
    optionFields: $("option-fields"), dropZone: $("drop-zone"), pickFiles: $("pick-files"), fileInput: $("file-input"),
    urls: $("urls"), addUrls: $("add-urls"), sourcesStatus: $("sources-status"), sourceList: $("source-list"),
    runJob: $("run-job"), cancelJob: $("cancel-job"), downloadAll: $("download-all"), progress: $("job-progress"),
    counter: $("job-counter"), message: $("job-message"), error: $("job-error"), summary: $("job-summary"),
    jsonBox: $("job-json-box"), jobId: $("job-id"), json: $("job-json"), results: $("results"),
    cardTemplate: $("result-card"),
  };

  const state = {
    catalogue: null, // GET /ai/job-types
    sources: [], // {id, kind: "file"|"url", name, file?, url?, preview, size?}
    job: null, // {id, type, sources, cards, final, result, stream: AbortController}
    nextSourceId: 1,
  };

  // ---------------------------------------------------------------- small helpers

  function formatBytes(bytes) {
    if (bytes === null || bytes === undefined || Number.isNaN(bytes)) return "–";
    const sign = bytes < 0 ? "-" : "";
    let value = Math.abs(bytes);
    const units = ["B", "KiB", "MiB", "GiB"];
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return `${sign}${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
  }

  function humanize(name) {
    const words = name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase();
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function setText(node, text, kind) {
    node.textContent = text || "";
    if (kind !== undefined) node.classList.toggle("ok", kind === "ok");
  }

  function getKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path, options = {}) {
    const headers = { "X-API-Key": getKey(), ...(options.headers || {}) };
    let response;
    try {
      response = await fetch(`${API}/${path}`, { ...options, headers, cache: "no-store" });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "The service cannot be reached. Is it running?");
    }
    if (!response.ok) {
      let detail = `HTTP ${response.status}`;
      try { detail = (await response.json()).detail || detail; } catch (ignored) { /* not JSON */ }
      if (response.status === 401) {
        detail = `The service refused the API key (${detail}). Enter a valid key in step 1.`;
      } else if (response.status === 429 || response.status === 503) {
        const retry = response.headers.get("Retry-After");
        if (retry) detail += ` Try again in ${retry} s.`;
      }
      throw new ApiError(response.status, detail);
    }
    return response;
  }

  function onKeyRefused(error) {
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(KEY_STORE);
      el.forgetKey.hidden = true;
      setText(el.keyStatus, error.message, "error");
      el.keyInput.focus();
      updateRunButton();
    }
  }

  // ---------------------------------------------------------------- 1. the API key

  async function useKey(key) {
    sessionStorage.setItem(KEY_STORE, key);
    setText(el.keyStatus, "Checking the key…");
    try {
      const response = await api("ai/job-types");
      state.catalogue = await response.json();
    } catch (error) {
      state.catalogue = null;
      if (error instanceof ApiError && error.status === 401) {
        onKeyRefused(error);
      } else {
        setText(el.keyStatus, error.message);
      }
      showJobTypes();
      return;
    }
    el.keyInput.value = "";
    el.keyInput.placeholder = "Key accepted";
    el.forgetKey.hidden = false;
    setText(el.keyStatus, "Key accepted. It is kept in this tab only.", "ok");
    showJobTypes();
  }

  el.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = el.keyInput.value.trim();
    if (!key) { setText(el.keyStatus, "Enter the API key the service was configured with."); return; }
    useKey(key);
  });

  el.forgetKey.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    state.catalogue = null;
    el.forgetKey.hidden = true;
    el.keyInput.placeholder = "";
    setText(el.keyStatus, "Key forgotten.");
    showJobTypes();
    el.keyInput.focus();
  });

  // ---------------------------------------------------------------- 2. job type and options

  function showJobTypes() {
    const previous = el.jobType.value;
    el.jobType.replaceChildren();
    const types = state.catalogue ? state.catalogue.job_types : [];
    if (!types.length) {
      el.jobType.append(new Option("Enter an API key first", ""));
      el.jobType.disabled = true;
      el.options.disabled = true;
      el.optionFields.replaceChildren();
      setText(el.jobTypeHelp, "");
      updateRunButton();
      return;
    }
    for (const entry of types) {
      const option = new Option(TYPE_LABELS[entry.type] || humanize(entry.type), entry.type);
      if (!entry.enabled) { option.disabled = true; option.text += " (disabled)"; }
      el.jobType.append(option);
    }
    const wanted = types.find((entry) => entry.type === previous && entry.enabled)
      || types.find((entry) => entry.type === "batch_optimization" && entry.enabled)
      || types.find((entry) => entry.enabled);
    el.jobType.value = wanted ? wanted.type : "";
    el.jobType.disabled = false;
    showOptions();
  }

  function currentType() {
    if (!state.catalogue) return null;
    return state.catalogue.job_types.find((entry) => entry.type === el.jobType.value) || null;
  }

  function fieldSchema(property) {
    // Optional fields are `anyOf: [{...}, {type: "null"}]` in pydantic's schema.
    if (Array.isArray(property.anyOf)) {
      const real = property.anyOf.find((branch) => branch.type !== "null") || {};
      return { ...real, default: property.default, nullable: true };
    }
    return { ...property, nullable: false };
  }

  function limitsText(schema) {
    const parts = [];
    if (schema.minimum !== undefined && schema.maximum !== undefined) parts.push(`Allowed ${schema.minimum}–${schema.maximum}`);
    else if (schema.minimum !== undefined) parts.push(`At least ${schema.minimum}`);
    else if (schema.maximum !== undefined) parts.push(`At most ${schema.maximum}`);
    if (schema.maxLength !== undefined && schema.type === "string") parts.push(`Up to ${schema.maxLength} characters`);
    if (schema.default !== undefined && schema.default !== null && schema.default !== "") {
      const shown = typeof schema.default === "boolean" ? (schema.default ? "on" : "off") : schema.default;
      parts.push(parts.length ? `default ${shown}` : `Default ${shown}`);
    }
    return parts.length ? `${parts.join(", ")}.` : "";
  }

  function showOptions() {
    const entry = currentType();
    el.optionFields.replaceChildren();
    el.options.disabled = !entry;
    setText(el.jobTypeHelp, entry ? TYPE_HELP[entry.type] || "" : "");
    if (!entry) { updateRunButton(); return; }
    const schema = entry.config_schema;
    const required = new Set(schema.required || []);
    for (const [name, property] of Object.entries(schema.properties || {})) {
      el.optionFields.append(buildField(name, fieldSchema(property), required.has(name)));
    }
    updateRunButton();
  }

  function buildField(name, schema, required) {
    const id = `option-${name}`;
    const wrapper = document.createElement("div");
    wrapper.className = "field";
    wrapper.dataset.option = name;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = humanize(name);
    if (required) {
      const mark = document.createElement("span");
      mark.className = "required";
      mark.textContent = " (required)";
      label.append(mark);
    }
    let input;
    let line = null;
    if (Array.isArray(schema.enum)) {
      input = document.createElement("select");
      for (const value of schema.enum) {
        const option = new Option(String(value), String(value));
        if (name === "mode" && value === "generative" && !state.catalogue.remote_model) {
          option.disabled = true;
          option.text += " (needs a remote image model)";
        }
        input.append(option);
      }
      if (schema.default !== undefined && schema.default !== null) input.value = String(schema.default);
      input.dataset.kind = "enum";
    } else if (schema.type === "boolean") {
      wrapper.classList.add("check");
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = Boolean(schema.default);
      input.dataset.kind = "boolean";
    } else if (schema.type === "integer" || schema.type === "number") {
      input = document.createElement("input");
      const narrow = schema.minimum !== undefined && schema.maximum !== undefined
        && schema.maximum - schema.minimum <= 10;
      input.type = narrow ? "range" : "number";
      if (schema.minimum !== undefined) input.min = String(schema.minimum);
      if (schema.maximum !== undefined) input.max = String(schema.maximum);
      input.step = schema.type === "integer" ? "1" : "0.01";
      if (schema.default !== undefined && schema.default !== null) input.value = String(schema.default);
      input.dataset.kind = schema.type;
      if (narrow) {
        line = document.createElement("div");
        line.className = "range-line";
        const output = document.createElement("output");
        output.htmlFor = id;
        output.value = input.value;
        input.addEventListener("input", () => { output.value = input.value; });
        line.append(input, output);
      } else if (schema.nullable) {
        input.placeholder = "optional";
      }
    } else {
      const long = /prompt/i.test(name);
      input = document.createElement(long ? "textarea" : "input");
      if (long) { input.rows = 2; wrapper.classList.add("wide"); } else { input.type = "text"; }
      if (schema.maxLength !== undefined) input.maxLength = schema.maxLength;
      if (schema.minLength !== undefined && required) input.minLength = schema.minLength;
      if (schema.default !== undefined && schema.default !== null) input.value = String(schema.default);
      if (schema.nullable) input.placeholder = "optional";
      input.dataset.kind = "string";
      if (/url/i.test(name)) { input.type = "url"; wrapper.classList.add("wide"); }
    }
    input.id = id;
    input.name = name;
    input.dataset.nullable = schema.nullable ? "true" : "false";
    if (required) input.required = true;
    const help = document.createElement("p");
    help.className = "hint";
    help.id = `${id}-help`;
    help.textContent = [FIELD_HELP[name], limitsText(schema)].filter(Boolean).join(" ");
    input.setAttribute("aria-describedby", help.id);
    if (wrapper.classList.contains("check")) wrapper.append(input, label, help);
    else wrapper.append(label, line || input, help);
    return wrapper;
  }

  function readConfig() {
    const config = {};
    for (const input of el.optionFields.querySelectorAll("input, select, textarea")) {
      const kind = input.dataset.kind;
      if (kind === "boolean") { config[input.name] = input.checked; continue; }
      const raw = input.value.trim();
      if (raw === "" && input.dataset.nullable === "true") continue;
      if (kind === "integer") config[input.name] = Number.parseInt(raw, 10);
      else if (kind === "number") config[input.name] = Number.parseFloat(raw);
      else config[input.name] = input.value;
    }
    return config;
  }

  el.jobType.addEventListener("change", showOptions);

  // ---------------------------------------------------------------- 3. photos

  function addFiles(files) {
    const limits = state.catalogue ? state.catalogue.limits : null;
    const refused = [];
    for (const file of files) {
      if (!file.type.startsWith("image/") && !/\.(jpe?g|png|webp|gif|tiff?|avif|heic|heif|bmp)$/i.test(file.name)) {
        refused.push(`${file.name} is not an image`);
        continue;
      }
      if (limits && file.size > limits.source_max_bytes) {
        refused.push(`${file.name} is larger than the ${formatBytes(limits.source_max_bytes)} limit`);
        continue;
      }
      state.sources.push({
        id: state.nextSourceId++, kind: "file", name: file.name, file, size: file.size,
        preview: URL.createObjectURL(file),
      });
    }
    showSources(refused.join("; "));
  }

  function addUrls() {
    const lines = el.urls.value.split(/\s*\n\s*/).map((line) => line.trim()).filter(Boolean);
    const refused = [];
    for (const line of lines) {
      let url;
      try { url = new URL(line); } catch (ignored) { refused.push(`${line} is not a URL`); continue; }
      if (url.protocol !== "http:" && url.protocol !== "https:") { refused.push(`${line}: use http(s)`); continue; }
      const name = decodeURIComponent(url.pathname.split("/").filter(Boolean).pop() || url.host);
      state.sources.push({ id: state.nextSourceId++, kind: "url", name, url: url.href, size: null, preview: url.href });
    }
    el.urls.value = refused.length ? el.urls.value : "";
    showSources(refused.join("; "));
  }

  function removeSource(id) {
    const index = state.sources.findIndex((source) => source.id === id);
    if (index < 0) return;
    const [source] = state.sources.splice(index, 1);
    if (source.kind === "file" && !(state.job && state.job.sources.includes(source))) URL.revokeObjectURL(source.preview);
    showSources("");
    const next = el.sourceList.querySelector("button") || el.pickFiles;
    next.focus();
  }

  function showSources(problem) {
    el.sourceList.replaceChildren();
    for (const source of state.sources) {
      const item = document.createElement("li");
      const image = document.createElement("img");
      image.src = source.preview;
      image.alt = "";
      image.loading = "lazy";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = source.name;
      name.title = source.kind === "url" ? source.url : source.name;
      const size = document.createElement("span");
      size.className = "size";
      size.textContent = source.kind === "file" ? formatBytes(source.size) : "URL";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${source.name}`);
      remove.addEventListener("click", () => removeSource(source.id));
      item.append(image, name, size, remove);
      el.sourceList.append(item);
    }
    const count = state.sources.length;
    const text = count ? `${count} photo${count === 1 ? "" : "s"} ready.` : "";
    setText(el.sourcesStatus, [text, problem].filter(Boolean).join(" "));
    updateRunButton();
  }

  el.pickFiles.addEventListener("click", () => el.fileInput.click());
  el.fileInput.addEventListener("change", () => { addFiles([...el.fileInput.files]); el.fileInput.value = ""; });
  el.addUrls.addEventListener("click", addUrls);
  for (const name of ["dragenter", "dragover"]) {
    el.dropZone.addEventListener(name, (event) => { event.preventDefault(); el.dropZone.classList.add("over"); });
  }
  el.dropZone.addEventListener("dragleave", () => el.dropZone.classList.remove("over"));
  el.dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    el.dropZone.classList.remove("over");
    const transfer = event.dataTransfer;
    if (transfer && transfer.files && transfer.files.length) { addFiles([...transfer.files]); return; }
    const text = transfer ? transfer.getData("text/uri-list") || transfer.getData("text/plain") : "";
    if (text) { el.urls.value = text; addUrls(); }
  });
  // A file dropped anywhere else must not make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])];
    if (files.length && !(event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLInputElement)) {
      event.preventDefault();
      addFiles(files);
    }
  });

  // ---------------------------------------------------------------- 4. run, follow, cancel

  function running() { return Boolean(state.job && !state.job.final); }

  function updateRunButton() {
    el.runJob.disabled = !getKey() || !currentType() || !state.sources.length || running();
    el.cancelJob.disabled = !running();
  }

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error(`${file.name} could not be read`));
      reader.readAsDataURL(file);
    });
  }

  function newJobId() {
    const random = new Uint32Array(2);
    crypto.getRandomValues(random);
    return `pg-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
  }

  async function runJob() {
    setText(el.error, "");
    delete el.results.dataset.done;
    const entry = currentType();
    if (!entry) return;
    if (!el.optionsForm.reportValidity()) return;
    const limits = state.catalogue.limits;
    if (state.sources.length > limits.max_images_per_job) {
      setText(el.error, `At most ${limits.max_images_per_job} photos per job; remove ${state.sources.length - limits.max_images_per_job}.`);
      return;
    }
    const sources = [...state.sources];
    const config = readConfig();
    el.runJob.disabled = true;
    setText(el.message, "Reading the photos…");
    let urls;
    try {
      urls = await Promise.all(sources.map((source) => (source.kind === "file" ? readAsDataUrl(source.file) : source.url)));
    } catch (error) {
      setText(el.error, error.message);
      setText(el.message, "");
      updateRunButton();
      return;
    }
    const jobId = newJobId();
    const body = JSON.stringify({ job_id: jobId, type: entry.type, config, source_image_urls: urls });
    if (body.length > limits.max_job_request_bytes) {
      setText(el.error, `These photos make a ${formatBytes(body.length)} request; the service takes at most ${formatBytes(limits.max_job_request_bytes)}. Send fewer or smaller photos.`);
      setText(el.message, "");
      updateRunButton();
      return;
    }
    setText(el.message, "Submitting…");
    try {
      await api("ai/job", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    } catch (error) {
      onKeyRefused(error);
      setText(el.error, `The job was not accepted: ${error.message}`);
      setText(el.message, "");
      updateRunButton();
      return;
    }
    startJob(jobId, entry.type, sources, config);
  }

  function startJob(jobId, type, sources, config) {
    if (state.job && state.job.stream) state.job.stream.abort();
    state.job = {
      id: jobId, type, sources, config, cards: [], final: false, result: null, processed: -1,
      stream: new AbortController(), refreshing: null, refreshAgain: false,
    };
    el.progress.value = 0;
    setText(el.counter, `0/${sources.length}`);
    setText(el.summary, "");
    el.downloadAll.disabled = true;
    el.jsonBox.hidden = false;
    setText(el.jobId, jobId);
    setText(el.json, "");
    el.results.replaceChildren();
    sources.forEach((source, index) => {
      const card = buildCard(source, index, type);
      state.job.cards.push(card);
      el.results.append(card);
    });
    el.results.dataset.jobId = jobId;
    el.results.dataset.state = "pending";
    delete el.results.dataset.done;
    updateRunButton();
    followJob(state.job);
  }

  async function followJob(job) {
    // Reconnects when the connection drops before the final event; the service sends the current
    // state first, so nothing is missed.
    for (let attempt = 0; attempt < 6 && !job.final; attempt += 1) {
      try {
        await readStream(job);
      } catch (error) {
        if (error.name === "AbortError") return;
        onKeyRefused(error);
        if (error instanceof ApiError && error.status !== 0 && error.status < 500) {
          setText(el.error, `Progress could not be followed: ${error.message}`);
          break;
        }
      }
      if (job.final || job.stream.signal.aborted) return;
      setText(el.message, "Connection lost; reconnecting…");
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    }
    if (!job.final && state.job === job) {
      setText(el.error, "Lost the progress stream. The job may still be running; its results are shown as far as known.");
      await refreshResult(job);
      job.final = true;
      updateRunButton();
    }
  }

  async function readStream(job) {
    const response = await api(`ai/job/${encodeURIComponent(job.id)}/stream`, {
      headers: { Accept: "text/event-stream" },
      signal: job.stream.signal,
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { name: "message", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // Server-Sent Events: lines end with CRLF, LF or CR; a blank line ends an event.
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) await onEvent(job, event.name, event.data.join("\n"));
          event = { name: "message", data: [] };
          if (job.final) { reader.cancel().catch(() => {}); return; }
          continue;
        }
        if (line.startsWith(":")) continue; // heartbeat comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event.name = text;
        else if (field === "data") event.data.push(text);
      }
    }
  }

  async function onEvent(job, name, data) {
    if (state.job !== job) return;
    let status;
    try { status = JSON.parse(data); } catch (ignored) { return; }
    if (name === "error") {
      setText(el.error, status.detail || "The service ended the progress stream.");
      job.final = true;
      updateRunButton();
      return;
    }
    el.progress.value = status.progress || 0;
    setText(el.counter, `${status.processed}/${status.total}`);
    setText(el.message, status.message);
    el.results.dataset.state = status.status;
    if (FINAL.has(status.status)) {
      job.final = true;
      updateRunButton();
      await refreshResult(job);
      showSummary(job);
      el.results.dataset.state = status.status;
      el.results.dataset.done = "true";
      return;
    }
    // Each change of the job (an image started or finished) shows in the cards at once.
    refreshResult(job);
  }

  async function refreshResult(job) {
    // One request at a time; changes that arrive meanwhile are read by one more request after it.
    if (job.refreshing) { job.refreshAgain = true; return job.refreshing; }
    job.refreshing = (async () => {
      do {
        job.refreshAgain = false;
        try {
          const response = await api(`ai/job/${encodeURIComponent(job.id)}`);
          const result = await response.json();
          if (state.job !== job) return;
          job.result = result;
          showResult(job, result);
        } catch (error) {
          onKeyRefused(error);
          if (error.name !== "AbortError") setText(el.error, `The job's result could not be read: ${error.message}`);
          return;
        }
      } while (job.refreshAgain);
    })();
    try { await job.refreshing; } finally { job.refreshing = null; }
    return undefined;
  }

  el.runJob.addEventListener("click", runJob);

  el.cancelJob.addEventListener("click", async () => {
    const job = state.job;
    if (!job || job.final) return;
    el.cancelJob.disabled = true;
    setText(el.message, "Cancelling…");
    try {
      const response = await api(`ai/job/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
      const answer = await response.json();
      // The stream's final event may have come first: its message (what was kept) has the last word.
      if (!job.final) setText(el.message, answer.message);
    } catch (error) {
      onKeyRefused(error);
      setText(el.error, error.status === 409 ? "The job had already finished." : `Cancel failed: ${error.message}`);
      updateRunButton();
    }
  });

  // ---------------------------------------------------------------- results

  function buildCard(source, index, type) {
    const card = el.cardTemplate.content.firstElementChild.cloneNode(true);
    card.dataset.index = String(index);
    const title = card.querySelector(".card-title");
    title.textContent = `${index + 1}. ${source.name}`;
    title.title = source.kind === "url" ? source.url : source.name;
    const before = card.querySelector(".before");
    before.alt = `Source: ${source.name}`;
    before.addEventListener("load", () => {
      setField(card, "source-width", before.naturalWidth);
      setField(card, "source-height", before.naturalHeight);
      card.querySelector(".compare").classList.toggle("landscape", type !== "background_replacement"
        && before.naturalWidth > before.naturalHeight);
    });
    before.src = source.preview;
    setField(card, "source-bytes", source.size, formatBytes(source.size));
    card.querySelector(".after").alt = `Result: ${source.name}`;
    const compare = card.querySelector(".compare");
    const slider = card.querySelector(".slider");
    slider.addEventListener("input", () => compare.style.setProperty("--split", `${slider.value}%`));
    slider.setAttribute("aria-label", `Compare source and result of ${source.name}: left shows the source, right the result`);
    const toggle = card.querySelector(".view-toggle");
    toggle.setAttribute("aria-pressed", "false");
    toggle.addEventListener("click", () => {
      const side = compare.dataset.mode !== "side";
      compare.dataset.mode = side ? "side" : "slider";
      toggle.textContent = side ? "Slider" : "Side by side";
      toggle.setAttribute("aria-pressed", String(side));
    });
    return card;
  }

  function setField(card, field, value, text) {
    const node = card.querySelector(`[data-field="${field}"]`);
    if (!node) return;
    node.dataset.value = value === null || value === undefined ? "" : String(value);
    node.textContent = text !== undefined ? text : (value === null || value === undefined ? "–" : String(value));
  }

  function resultName(source, format) {
    const stem = source.name.replace(/\.[^.]+$/, "") || "image";
    return `${stem}.${format}`;
  }

  function showResult(job, result) {
    const images = (result.metadata && result.metadata.images) || [];
    const errors = new Map((result.errors || []).map((item) => [item.index, item.error]));
    setText(el.json, JSON.stringify(result, null, 2));
    images.forEach((image) => {
      const card = job.cards[image.index];
      const source = job.sources[image.index];
      if (!card) return;
      card.dataset.state = image.status;
      setText(card.querySelector(".badge"), image.status);
      const error = errors.get(image.index);
      setText(card.querySelector(".image-error"), error ? `Failed: ${error}` : "");
      const url = result.result_image_urls[image.index];
      if (image.status !== "succeeded" || !url) return;
      const after = card.querySelector(".after");
      if (after.dataset.url !== url) {
        after.dataset.url = url;
        after.hidden = false;
        after.src = url;
      }
      card.classList.add("has-result");
      const sourceBytes = source.size !== null ? source.size : image.original_bytes;
      setField(card, "source-bytes", sourceBytes, formatBytes(sourceBytes));
      setField(card, "result-width", image.width);
      setField(card, "result-height", image.height);
      setField(card, "result-bytes", image.bytes, formatBytes(image.bytes));
      setField(card, "result-format", image.format);
      if (sourceBytes !== null && sourceBytes !== undefined) {
        const saved = sourceBytes - image.bytes;
        setField(card, "saved-bytes", saved, formatBytes(saved));
        setField(card, "saved-share", Math.round((100 * saved) / sourceBytes), `(${Math.round((100 * saved) / sourceBytes)} %)`);
      }
      if (image.total_ms !== undefined) setField(card, "time", image.total_ms, `${(image.total_ms / 1000).toFixed(2)} s`);
      const download = card.querySelector(".download");
      download.href = url;
      download.download = resultName(source, image.format);
      download.hidden = false;
      download.setAttribute("aria-label", `Download the result of ${source.name}`);
      const details = [];
      if (job.type === "background_replacement") {
        // What ran, as the service echoes it: defaults filled in.
        const ran = (result.metadata && result.metadata.config) || job.config;
        details.push(`mode ${image.mode || ran.mode}`);
        details.push(`padding ${ran.padding}`);
        details.push(`shadow ${image.shadow ? "on" : "off"}`);
        if (image.background) details.push(`background: ${image.background}`);
        if (image.note) details.push(`note: ${image.note}`);
      } else if (image.note) {
        details.push(image.note);
      }
      setText(card.querySelector(".details"), details.join(" · "));
    });
    const succeeded = images.filter((image) => image.status === "succeeded").length;
    el.downloadAll.disabled = succeeded === 0;
  }

  function showSummary(job) {
    const result = job.result;
    if (!result) return;
    let bytesIn = 0;
    let bytesOut = 0;
    let known = true;
    for (const image of result.metadata.images) {
      if (image.status !== "succeeded") continue;
      const source = job.sources[image.index];
      const size = source.size !== null ? source.size : image.original_bytes;
      if (size === undefined || size === null) known = false;
      bytesIn += size || 0;
      bytesOut += image.bytes;
    }
    const seconds = result.processing_time_ms !== null ? `${(result.processing_time_ms / 1000).toFixed(1)} s` : "";
    const parts = [`${result.succeeded} of ${result.total} done`, seconds];
    if (result.succeeded && known) {
      parts.push(`${formatBytes(bytesIn)} in, ${formatBytes(bytesOut)} out (saved ${Math.round((100 * (bytesIn - bytesOut)) / bytesIn)} %)`);
    }
    setText(el.summary, parts.filter(Boolean).join(" · "));
  }

  el.downloadAll.addEventListener("click", async () => {
    const job = state.job;
    if (!job) return;
    const query = new URLSearchParams();
    for (const source of job.sources) query.append("name", source.name.slice(0, 200));
    el.downloadAll.disabled = true;
    try {
      const response = await api(`ai/job/${encodeURIComponent(job.id)}/results.zip?${query}`);
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `${job.id}-results.zip`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    } catch (error) {
      onKeyRefused(error);
      setText(el.error, `The download failed: ${error.message}`);
    } finally {
      el.downloadAll.disabled = false;
    }
  });

  // ---------------------------------------------------------------- start

  showSources("");
  if (getKey()) useKey(getKey());
  else el.keyInput.focus();
})();
