// CNN explorer: a page over the service's public native API (/api/v1). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "cnn-explorer-api-key";
const TOP_K = 5;
const MIN_TILE_PX = 56; // service/visualize.py draws each feature map at least this large...
const GAP_PX = 2; // ...with this gap between tiles

const state = {
  ref: null, // "fashion_cnn", "fashion_cnn/versions/1" or "fashion_cnn/labels/stable"
  detail: null, // the model card (GET /api/v1/models/{ref})
  image: null, // the Blob being explored
  urls: {}, // object URLs in use, by element id
  run: 0, // bumps on every new analysis, so late answers of an older one are dropped
};

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// -- talking to the API ----------------------------------------------------------------------------
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, "the server could not be reached");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch (err) {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message, response.headers.get("Retry-After"));
  }
  return response;
}

function imageForm(field) {
  const form = new FormData();
  form.append(field, state.image, state.image.name || "image.png");
  return form;
}

function explain(error) {
  switch (error.status) {
    case 401:
      $("key-box").open = true;
      return `This server needs an API key: enter it under “API key” above. (${error.message})`;
    case 413:
      return `Too large: ${error.message}`;
    case 415:
      return `Not an image type the server reads: ${error.message}`;
    case 503:
      return `The server is busy or the model is not ready: ${error.message}` +
        (error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "");
    case 504:
      return `The model took too long: ${error.message}`;
    case 0:
      return `No answer: ${error.message}.`;
    default:
      return error.message;
  }
}

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = error instanceof ApiError ? explain(error) : String(error);
  box.hidden = false;
}

function setImage(id, blob) {
  if (state.urls[id]) URL.revokeObjectURL(state.urls[id]);
  state.urls[id] = URL.createObjectURL(blob);
  $(id).src = state.urls[id];
}

// -- models ----------------------------------------------------------------------------------------
async function loadModels() {
  const { models } = await (await api("/api/v1/models")).json();
  const select = $("model");
  select.replaceChildren();
  for (const model of models) {
    const group = document.createElement("optgroup");
    group.label = model.name;
    const add = (value, text) => group.append(new Option(text, value));
    if (model.default_version !== null) add(model.name, `${model.name} (default: v${model.default_version})`);
    for (const v of model.versions) {
      if (v.state === "AVAILABLE") add(`${model.name}/versions/${v.version}`, `${model.name} v${v.version}`);
    }
    for (const [label, version] of Object.entries(model.labels)) {
      add(`${model.name}/labels/${encodeURIComponent(label)}`, `${model.name} “${label}” (v${version})`);
    }
    if (group.children.length) select.append(group);
  }
  if (!select.options.length) throw new Error("No model version is being served yet.");
  await selectModel(select.value);
}

async function selectModel(ref) {
  state.ref = ref;
  state.detail = await (await api(`/api/v1/models/${ref}`)).json();
  const detail = state.detail;
  $("model-note").textContent =
    `${detail.architecture || detail.name}, input ${detail.input.shape.slice(1).join("×")}` +
    (detail.metrics && detail.metrics.test_accuracy
      ? `, test accuracy ${(100 * detail.metrics.test_accuracy).toFixed(2)}%` : "");
  fillLayers();
  fillTargets();
  renderSummary(detail.summary);
  renderRollout(detail.rollout);
  if (state.image) await analyse();
}

function layerRows() {
  const rows = new Map();
  for (const layer of state.detail.summary ? state.detail.summary.layers : []) rows.set(layer.name, layer);
  return rows;
}

function fillLayers() {
  const rows = layerRows();
  const layers = state.detail.feature_layers;
  $("layer").replaceChildren(...layers.map((name) => {
    const row = rows.get(name);
    return new Option(row ? `${name} (${row.type}, ${row.output_shape.join("×")})` : name, name);
  }));
  const cams = state.detail.gradcam_layers || [];
  $("cam-layer").replaceChildren(...cams.map((name) => new Option(`${name} (${rows.get(name).output_shape.join("×")})`, name)));
  $("cam-layer").value = state.detail.gradcam_default || "";
}

function fillTargets(top = null) {
  const select = $("target");
  const chosen = select.value;
  const names = state.detail.class_names;
  select.replaceChildren(
    new Option(top === null ? "top-1" : `top-1 (${names[top]})`, ""),
    ...names.map((name, i) => new Option(`${i}: ${name}`, String(i))),
  );
  if (chosen && Number(chosen) < names.length) select.value = chosen;
}

// -- architecture ----------------------------------------------------------------------------------
const number = (n) => n.toLocaleString("en-US");
function bytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${n} B`;
}

function renderSummary(summary) {
  const body = document.querySelector("#arch tbody");
  const foot = document.querySelector("#arch tfoot");
  if (!summary) {
    $("arch-card").hidden = true;
    return;
  }
  const dims = (values) => (values ? values.join("×") : "–");
  body.replaceChildren(...summary.layers.map((layer) => {
    const tr = document.createElement("tr");
    const cells = [
      layer.name, layer.type + (layer.activation && layer.activation !== "linear" ? ` (${layer.activation})` : ""),
      dims(layer.output_shape), dims(layer.kernel_size), dims(layer.strides), layer.padding || "–",
      number(layer.params), number(layer.mult_adds), bytes(layer.memory_bytes), dims(layer.receptive_field),
      (layer.inputs || []).join(", ") || "–",
    ];
    cells.forEach((text, i) => {
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) cell.scope = "row";
      cell.textContent = text;
      tr.append(cell);
    });
    return tr;
  }));
  const total = document.createElement("tr");
  const cells = [`Total (${summary.layers.length} layers)`, "", `input ${dims(summary.input_shape)}`, "", "", "",
    number(summary.total_params), number(summary.total_mult_adds), bytes(summary.total_activation_bytes), "", ""];
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    total.append(cell);
  }
  foot.replaceChildren(total);
  $("arch-card").hidden = false;
}

// -- rollout: traffic split and shadow comparisons ---------------------------------------------------
const percent = (x) => `${Number.isInteger(100 * x) ? 100 * x : (100 * x).toFixed(1)}%`;

function cellRow(cells, header = false) {
  const tr = document.createElement("tr");
  cells.forEach((text, i) => {
    const cell = document.createElement(header || i === 0 ? "th" : "td");
    if (header) cell.scope = "col";
    else if (i === 0) cell.scope = "row";
    cell.textContent = text;
    tr.append(cell);
  });
  return tr;
}

function renderRollout(rollout) {
  const shown = rollout && (rollout.traffic.length || rollout.shadow || rollout.comparisons.length);
  $("rollout-card").hidden = !shown;
  if (!shown) return;
  const named = (target, version) => (version === null ? `${target} (not serving)` : String(target) === String(version)
    ? `v${version}` : `“${target}” (v${version})`);
  $("traffic").replaceChildren(...(rollout.traffic.length ? rollout.traffic : [null]).map((share) => {
    const li = document.createElement("li");
    li.textContent = share ? `${named(share.target, share.version)}: ${percent(share.share)} of requests`
      : "Every request goes to the default version.";
    return li;
  }));
  const dropped = Object.entries(rollout.dropped).map(([reason, n]) => `${reason.replace("_", " ")} ${number(n)}`);
  $("shadow-note").textContent = (rollout.shadow
    ? `Shadow: ${named(rollout.shadow.target, rollout.shadow.version)} also runs ${percent(rollout.shadow.fraction)} ` +
      "of the classifications, after each answer; its answers reach no one."
    : "No shadow version.") + (dropped.length ? ` Not compared: ${dropped.join(", ")}.` : "");
  $("comparisons").hidden = !rollout.comparisons.length;
  document.querySelector("#comparisons tbody").replaceChildren(...rollout.comparisons.map((c) => cellRow([
    `v${c.live_version}`, `v${c.shadow_version}`, number(c.requests), number(c.predictions), percent(c.agreement),
    `${c.latency.p50_ms.toFixed(2)} ms`, `${c.latency.p95_ms.toFixed(2)} ms`,
  ])));
  const latest = rollout.comparisons[0];
  $("confusion").hidden = !latest;
  if (!latest) return;
  $("confusion-caption").textContent =
    `Top-1 classes, v${latest.live_version} (rows) against shadow v${latest.shadow_version} (columns)`;
  document.querySelector("#confusion thead").replaceChildren(cellRow(["", ...latest.class_names], true));
  document.querySelector("#confusion tbody").replaceChildren(...latest.confusion.map((row, i) => {
    const tr = cellRow([latest.class_names[i], ...row.map(number)]);
    tr.children[i + 1].classList.add("diagonal");
    return tr;
  }));
}

// -- one image -------------------------------------------------------------------------------------
async function useImage(blob) {
  state.image = blob;
  setImage("preview", blob);
  await analyse();
}

async function analyse() {
  const run = ++state.run;
  showError(null);
  try {
    const response = await api(`/api/v1/models/${state.ref}/predict?top_k=${TOP_K}`, {
      method: "POST", body: imageForm("files"),
    });
    const { predictions } = await response.json();
    if (run !== state.run) return;
    renderBars(predictions[0]);
    fillTargets(predictions[0].class_id);
    $("prediction-card").hidden = false;
    await Promise.all([renderExplanation(run), renderFeatureMaps(run)]);
  } catch (error) {
    if (run !== state.run) return;
    for (const id of ["prediction-card", "explain-card", "maps-card"]) $(id).hidden = true;
    showError(error);
  }
}

function renderBars(prediction) {
  $("bars").replaceChildren(...prediction.top_k.map((score) => {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = score.label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * score.probability).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * score.probability).toFixed(1)}%`;
    li.append(label, track, value);
    li.setAttribute("aria-label", `${score.label}: ${(100 * score.probability).toFixed(1)} percent`);
    return li;
  }));
}

async function renderExplanation(run) {
  const method = $("method").value;
  const gradcam = method === "gradcam";
  $("cam-layer").hidden = $("cam-layer-label").hidden = !gradcam;
  const query = new URLSearchParams({ method, format: "png" });
  if (gradcam && $("cam-layer").value) query.set("layer", $("cam-layer").value);
  if ($("target").value) query.set("target", $("target").value);
  const response = await api(`/api/v1/models/${state.ref}/explain?${query}`, { method: "POST", body: imageForm("file") });
  const blob = await response.blob();
  if (run !== state.run) return;
  setImage("heatmap", blob);
  const target = $("target").value ? state.detail.class_names[Number($("target").value)] : "the top-1 class";
  const how = { gradcam: `Grad-CAM on ${$("cam-layer").value}`, saliency: "saliency (gradient × input)",
    occlusion: "occlusion (4×4 patches)" }[method];
  $("heatmap-caption").textContent = `${how}, for ${target}: red marks what raised the class's score most.`;
  $("explain-card").hidden = false;
}

async function renderFeatureMaps(run) {
  const layer = $("layer").value;
  const query = new URLSearchParams({ layer, format: "png" });
  const response = await api(`/api/v1/models/${state.ref}/feature-maps?${query}`, {
    method: "POST", body: imageForm("file"),
  });
  const blob = await response.blob();
  if (run !== state.run) return;
  const grid = $("grid");
  await new Promise((resolve) => {
    grid.onload = resolve;
    grid.onerror = resolve;
    setImage("grid", blob);
  });
  placeTiles(layerRows().get(layer), layer);
  $("maps-card").hidden = false;
}

// Transparent buttons over the grid, one per channel, placed as service/visualize.py lays tiles out.
function placeTiles(row, layer) {
  const tiles = $("tiles");
  tiles.replaceChildren();
  const shape = row ? row.output_shape : null;
  if (!shape || shape.length !== 3) {
    $("layer-note").textContent = shape ? `${shape[0]} units in one strip` : "";
    return;
  }
  const [height, width, channels] = shape;
  const columns = Math.ceil(Math.sqrt(channels));
  const scale = Math.max(1, Math.ceil(MIN_TILE_PX / Math.max(height, width)));
  const tileW = width * scale;
  const tileH = height * scale;
  const grid = $("grid");
  const W = grid.naturalWidth;
  const H = grid.naturalHeight;
  $("layer-note").textContent = `${channels} maps of ${height}×${width}; select one to enlarge it`;
  for (let c = 0; c < channels; c++) {
    const left = (c % columns) * (tileW + GAP_PX);
    const top = Math.floor(c / columns) * (tileH + GAP_PX);
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-label", `${layer} map ${c + 1} of ${channels}`);
    Object.assign(button.style, {
      left: `${(100 * left) / W}%`, top: `${(100 * top) / H}%`,
      width: `${(100 * tileW) / W}%`, height: `${(100 * tileH) / H}%`,
    });
    button.addEventListener("click", () => zoom(layer, c, channels, left, top, tileW, tileH));
    tiles.append(button);
  }
}

function zoom(layer, channel, channels, left, top, tileW, tileH) {
  const canvas = $("zoom-canvas");
  const factor = Math.max(1, Math.floor(280 / Math.max(tileW, tileH)));
  canvas.width = tileW * factor;
  canvas.height = tileH * factor;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage($("grid"), left, top, tileW, tileH, 0, 0, canvas.width, canvas.height);
  $("zoom-title").textContent = `${layer}: map ${channel + 1} of ${channels}`;
  $("zoom").showModal();
}

async function rerender(what) {
  if (!state.image) return;
  const run = ++state.run;
  showError(null);
  try {
    await what(run);
  } catch (error) {
    if (run === state.run) showError(error);
  }
}

// -- wiring ----------------------------------------------------------------------------------------
async function loadSamples() {
  const { samples } = await (await fetch("/explorer/samples/samples.json")).json();
  $("samples").replaceChildren(...samples.map((sample) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.title = sample.label;
    button.setAttribute("aria-label", `Sample: ${sample.label}`);
    const img = document.createElement("img");
    img.src = `/explorer/samples/${sample.file}`;
    img.alt = "";
    button.append(img);
    button.addEventListener("click", async () => {
      const blob = await (await fetch(img.src)).blob();
      await useImage(new File([blob], sample.file, { type: "image/png" }));
    });
    li.append(button);
    return li;
  }));
}

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) useImage(event.target.files[0]);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file").click();
    }
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) useImage(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) useImage(file);
  });
  $("model").addEventListener("change", (event) => selectModel(event.target.value).catch(showError));
  for (const id of ["method", "target", "cam-layer"]) $(id).addEventListener("change", () => rerender(renderExplanation));
  $("layer").addEventListener("change", () => rerender(renderFeatureMaps));
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    start();
  });
}

async function start() {
  showError(null);
  try {
    await loadModels();
  } catch (error) {
    showError(error);
  }
}

wire();
loadSamples().catch(showError);
start();
