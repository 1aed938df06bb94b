// The saliency panel's shared core, part 2 of 2 (after arith.js): the image, the target's map
// with its colour bar and the overlay; the class probabilities and the contrast map; every
// class's map; the exports; and, where the payload asks (`own_controls`), the panel's own
// switches: colour map, alpha, clip, scale, sign and (where the payload lists its choices) the
// target class. Everything that needs no new gradients is drawn here at once: a class hovered
// over (grid or chart) is previewed, a class clicked or a switch changed is shown and then
// told to the host (`panel.host.pick`, `panel.host.setting`).
//
// A host (streamlit.js, widget.js) makes a panel with `makePanel(root, host)` and draws each
// payload with `show(panel, d, A)`. It gives `host.pick(k, seq)` (a class clicked, or chosen in
// the target box: a number, "predicted" or "true"), optionally `host.setting(panel, settings)`
// (a switch changed: every setting as shown now; without it the switches are the panel's
// alone) and `host.shown(panel, d)` (after each drawing). This file reads no host's DOM.

// --- the panel ------------------------------------------------------------------------------

function el(tag, cls, parent, attrs = {}) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// A figure shaped like st.image's (same test ids), so whatever waits for the "Map: …" picture
// finds it whether this panel or the server's fallback shows it.
function figure(parent, cls) {
  const fig = el("div", `sal-fig ${cls}`, parent, { "data-testid": "stImage" });
  const img = el("img", "sal-img", fig, { alt: "" });
  const cap = el("div", "sal-cap", fig, { "data-testid": "stImageCaption" });
  return { fig, img, cap };
}

function colourBar(parent) {
  const bar = el("div", "sal-bar", parent);
  return { bar, strip: el("canvas", "sal-bar-strip", bar), ticks: el("div", "sal-bar-ticks", bar) };
}

function build(root) {
  root.replaceChildren();
  const ui = { canvas: document.createElement("canvas"), cells: new Map(), rows: new Map() };
  const row = el("div", "sal-row", root);
  ui.seen = figure(row, "sal-seen");
  ui.map = figure(row, "sal-map");
  ui.mapBar = colourBar(ui.map.fig);
  ui.overlay = figure(row, "sal-overlay");

  const two = el("div", "sal-two", root);
  const left = el("div", "sal-col", two);
  el("h4", "sal-h", left).textContent = "Prediction";
  ui.barsNote = el("p", "sal-note", left);
  const legend = el("div", "sal-legend", left);
  for (const [name, colour] of [
    ["predicted", PREDICTED],
    ["true", TRUE],
    ["other", OTHER],
  ]) {
    const item = el("span", "sal-legend-item", legend);
    el("span", "sal-swatch", item).style.background = colour;
    item.append(name);
  }
  ui.bars = el("div", "sal-bars", left, { role: "listbox", "aria-label": "Class probabilities" });
  const right = el("div", "sal-col sal-contrast", two);
  ui.contrastTitle = el("h4", "sal-h", right);
  ui.contrast = figure(right, "sal-contrast-fig");
  ui.contrastBar = colourBar(ui.contrast.fig);

  ui.gridTitle = el("h4", "sal-h", root);
  ui.gridNote = el("p", "sal-note", root);
  ui.grid = el("div", "sal-grid", root, { role: "listbox", "aria-label": "Target class" });

  el("h4", "sal-h", root).textContent = "Share and export";
  ui.exportNote = el("p", "sal-note", root);
  const buttons = el("div", "sal-export", root);
  ui.png = el("button", "sal-button", buttons, { type: "button" });
  ui.png.textContent = "Map as PNG";
  ui.npy = el("button", "sal-button", buttons, { type: "button" });
  ui.npy.textContent = "Raw map as .npy";
  ui.json = el("button", "sal-button", buttons, { type: "button" });
  ui.json.textContent = "Settings as JSON";
  ui.status = el("p", "sal-status", root);
  return ui;
}

function pictureUrl(ui, w, h, pixels) {
  const c = ui.canvas;
  c.width = w;
  c.height = h;
  const ctx = c.getContext("2d");
  const data = ctx.createImageData(w, h);
  data.data.set(pixels);
  ctx.putImageData(data, 0, 0);
  return c.toDataURL("image/png");
}

function setSrc(img, url) {
  if (img.getAttribute("src") !== url) img.setAttribute("src", url);
}

function drawBar(bar, lut, lo, hi, px) {
  const length = Math.max(2, px - 40);
  const c = bar.strip;
  c.width = length;
  c.height = 14;
  const ctx = c.getContext("2d");
  const strip = ctx.createImageData(length, 14);
  for (let x = 0; x < length; x++) {
    const k = 3 * rint((x / (length - 1)) * 255);
    for (let y = 0; y < 14; y++) {
      const o = 4 * (y * length + x);
      strip.data[o] = lut[k];
      strip.data[o + 1] = lut[k + 1];
      strip.data[o + 2] = lut[k + 2];
      strip.data[o + 3] = 255;
    }
  }
  ctx.putImageData(strip, 0, 0);
  c.style.width = `${length}px`;
  bar.ticks.style.width = `${length}px`;
  bar.ticks.replaceChildren();
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    const t = el("span", "sal-tick", bar.ticks);
    t.style.left = `${p * 100}%`;
    t.textContent = fmtG(lo + p * (hi - lo), 2);
  }
}

function label(d, k) {
  return d.labels[String(k)] ?? String(k);
}

// --- settings: the panel's own switches ------------------------------------------------------

// Each setting's value in the host's data.
const FROM_DATA = {
  cmap: (d) => d.cmap,
  cmap_signed: (d) => d.cmap_signed,
  alpha: (d) => d.alpha,
  clip: (d) => d.clip,
  sign: (d) => d.sign,
  scale: (d) => d.scale_view,
  target: (d) => d.target,
};
const SETTINGS = ["cmap", "cmap_signed", "alpha", "clip", "scale", "sign"];
const HOLD_MS = 10_000; // a change the host never confirms is dropped after this

// A setting as the panel shows it: its own switch's where the host keeps none (`own`: the
// widget), a change the host hasn't confirmed yet (`over`: the dashboard's server), else the
// host's data.
function current(panel, k) {
  const { d, over, own } = panel;
  return k in own ? own[k] : over[k] ? over[k].v : FROM_DATA[k](d);
}

// The settings drawn, from `current`.
function settle(panel) {
  const { d, A, over } = panel;
  const v = (k) => current(panel, k);
  const signed = d.sign_local ? v("sign") === "signed" : d.signed;
  const cmap = signed ? v("cmap_signed") : v("cmap");
  const s = {
    signed,
    absolute: d.sign_local ? !signed : d.absolute_of_signed,
    cmap,
    cmapSigned: v("cmap_signed"),
    lut: A[`lut:${cmap}`],
    lutSigned: A[`lut:${v("cmap_signed")}`],
    alpha: v("alpha"),
    clip: v("clip"),
    shared: d.scale_local ? v("scale") === "shared" : d.shared,
  };
  // The view's settings as the JSON export writes them.
  s.view = {
    cmap: v("cmap"),
    cmap_signed: v("cmap_signed"),
    alpha: s.alpha,
    clip: s.clip,
    sign: d.sign_local ? v("sign") : d.sign,
    scale: d.scale_local ? v("scale") : d.scale_view,
  };
  if (!s.lut || !s.lutSigned) throw new Error(`no colour table for ${cmap}`);
  s.key = [s.signed, s.absolute, cmap, s.alpha, s.clip, s.shared].join();
  panel.s = s;
  // Each grid map's own range (they don't depend on the target).
  const rangesKey = `${d.arrays.maps.id},${s.signed},${s.absolute},${s.clip}`;
  if (panel.rangesKey !== rangesKey) {
    panel.rangesKey = rangesKey;
    panel.ranges = new Map();
    for (const c of d.grid) {
      if (panel.index.has(c)) {
        panel.ranges.set(c, displayRange([mapPart(panel, c)], s.signed, s.clip));
      }
    }
  }
  const t = over.target;
  panel.chosen = t && panel.index.has(t.v) ? t.v : d.target;
}

// Whether the panel draws a change of setting `k` itself (else only its host can).
function drawsLocally(d, k) {
  return k === "sign" ? d.sign_local : k === "scale" ? d.scale_local : true;
}

// The target box's value: the class chosen here and not yet confirmed, else the host's.
function targetChoice(panel) {
  const t = panel.over.target;
  return t ? (t.choice ?? String(t.v)) : panel.d.target_choice;
}

// A target chosen in the box: "predicted", "true" or a class number. Drawn at once where the
// panel holds its map; the host hears of it (`host.pick`) as of a class clicked.
function chooseTarget(panel, choice) {
  const d = panel.d;
  const k = choice === "predicted" ? d.pred : choice === "true" ? (d.true ?? d.pred) : Number(choice);
  panel.seq += 1;
  panel.over.target = { v: k, t: performance.now(), seq: panel.seq, choice };
  panel.host.pick(choice === "predicted" || choice === "true" ? choice : k, panel.seq);
  if (panel.local && panel.index.has(k)) redraw(panel);
  else panel.ui.status.textContent = "Updating…";
}

// Switches, labelled, in `box` (the panel's own, and its host's pickers), each calling
// `onChange(value)`; each returns a function that shows a value in it. A <select> of
// [value, text] options, radio buttons, a slider ([lo, hi, step]; `onInput` as it moves).
function field(box, text) {
  const f = el("label", "sal-control", box);
  el("span", "sal-control-name", f).textContent = text;
  return f;
}

function selectControl(box, text, options, onChange) {
  const sel = el("select", "sal-select", field(box, text), { "aria-label": text });
  for (const [value, name] of options) el("option", "", sel, { value }).textContent = name;
  sel.addEventListener("change", () => onChange(sel.value));
  return (v) => (sel.value = String(v));
}

function radioControl(box, text, options, onChange) {
  const attrs = { role: "radiogroup", "aria-label": text };
  const group = el("span", "sal-radios", field(box, text), attrs);
  const inputs = options.map(([value, shown]) => {
    const item = el("label", "sal-radio", group);
    const input = el("input", "", item, { type: "radio", name: `sal-${text}`, value });
    input.addEventListener("change", () => input.checked && onChange(value));
    item.append(shown);
    return input;
  });
  return (v) => inputs.forEach((input) => (input.checked = input.value === v));
}

function sliderControl(box, text, [min, max, step], onInput, onChange) {
  const f = field(box, text);
  const input = el("input", "sal-range", f, { type: "range", min, max, step, "aria-label": text });
  const shown = el("span", "sal-control-value", f);
  input.addEventListener("input", () => onInput(Number((shown.textContent = input.value))));
  input.addEventListener("change", () => onChange(Number(input.value)));
  return (v) => (input.value = shown.textContent = String(v));
}

// The panel's own switches (payload `own_controls`): colour map, signed colour map, alpha and
// clip; the scale and the sign where the panel draws them or its host hears of them
// (`host.setting`); the target class where the payload lists its choices (`target_choices`).
// A change is drawn here at once. A host with `setting(panel, settings)` hears of each (the
// dashboard, whose server then confirms it: `over`); one without keeps it here (`own`).
function buildControls(panel) {
  const { d, host } = panel;
  const c = d.controls;
  const box = el("div", "sal-controls", null);
  const set = {}; // setting -> shows a value in its switch
  const change = (k, v, tell = true) => {
    if (!host.setting) {
      panel.own[k] = v;
      if (panel.ready) redraw(panel);
      return;
    }
    panel.over[k] = { v, t: performance.now() };
    if (!panel.ready) return;
    if (tell) {
      // First: a panel that then fails to draw it is drawn again by the server's rerun (or
      // reports its failure then).
      host.setting(panel, Object.fromEntries(SETTINGS.map((s) => [s, current(panel, s)])));
      if (!drawsLocally(panel.d, k)) panel.ui.status.textContent = "Updating…";
    }
    redraw(panel);
  };
  const pairs = (options, names = {}) => options.map((o) => [o, names[o] || o]);
  const tell = (k) => (v) => change(k, v);
  const chosen = (v) => panel.ready && chooseTarget(panel, v);
  if (d.target_choices) set.target = selectControl(box, c.target, d.target_choices, chosen);
  set.cmap = selectControl(box, c.cmap, pairs(c.cmaps), tell("cmap"));
  set.cmap_signed = selectControl(box, c.cmap_signed, pairs(c.cmaps_signed), tell("cmap_signed"));
  // Drawn as a slider moves; the host hears of where it stops.
  const slide = (k, range) => {
    set[k] = sliderControl(box, c[k], range, (v) => change(k, v, false), tell(k));
  };
  slide("alpha", [0, 1, 0.05]);
  slide("clip", [50, 100, 0.5]);
  const choose = (k, options, names) =>
    (set[k] = radioControl(box, c[k], pairs(options, names), tell(k)));
  if (d.scale_local || host.setting) choose("scale", c.scales, { map: "per map" }); // as the sidebar
  if (d.sign_local || host.setting) choose("sign", c.signs);
  return { box, set };
}

// The switches, made again where the payload changes which there are, showing what is drawn.
function showControls(panel) {
  const { d, ui, host } = panel;
  const key = JSON.stringify([d.scale_local, d.sign_local, !!host.setting, d.target_choices]);
  if (!ui.controls || ui.controls.key !== key) {
    ui.controls?.box.remove();
    ui.controls = { ...buildControls(panel), key };
    ui.root.prepend(ui.controls.box);
  }
  for (const [k, show] of Object.entries(ui.controls.set)) {
    show(k === "target" ? targetChoice(panel) : current(panel, k));
  }
}

function redraw(panel) {
  settle(panel);
  panel.shown = panel.chosen;
  draw(panel, panel.chosen, false);
}

// [array, offset, length, absolute] of class k's map.
function mapPart(panel, k) {
  const { d, A, hw } = panel;
  return [A.maps, panel.index.get(k) * hw, hw, panel.s.absolute];
}

// The display range of the main map when `k` is the target (shared: over every map on screen).
function mainRange(panel, k) {
  const { d, A } = panel;
  const s = panel.s;
  if (!s.shared) return displayRange([mapPart(panel, k)], s.signed, s.clip);
  const parts = [mapPart(panel, k)];
  for (const c of d.grid) if (panel.index.has(c)) parts.push(mapPart(panel, c));
  for (const [name, a] of Object.entries(A)) {
    if (name.startsWith("extra")) parts.push([a, 0, a.length, false]);
  }
  return displayRange(parts, s.signed, s.clip);
}

// The image, map, colour bar and overlay for target `k`, and the grid's ranges with it.
function draw(panel, k, previewing) {
  const { d, A, ui, hw } = panel;
  const [h, w] = [panel.h, panel.w];
  const [lo, hi] = mainRange(panel, k);
  const px = new Uint8ClampedArray(4 * hw);
  const [a, off, , abs] = mapPart(panel, k);
  const s = panel.s;
  setSrc(ui.map.img, pictureUrl(ui, w, h, paint(a, off, hw, abs, lo, hi, s.lut, null, null, px)));
  paint(a, off, hw, abs, lo, hi, s.lut, A.rgb, s.alpha, px);
  setSrc(ui.overlay.img, pictureUrl(ui, w, h, px));
  const of = `${d.symbol}[${label(d, k)}]`;
  ui.map.cap.textContent =
    `Map: ${d.map_of ? `${d.map_of} of ${of}` : `∂ ${of} / ∂x`}` +
    (previewing ? " (preview: click to keep)" : "");
  ui.overlay.cap.textContent = `Overlay (alpha ${fmtG(s.alpha, 6)})`;
  drawBar(ui.mapBar, s.lut, lo, hi, Math.max(280, w * d.scale));
  ui.map.fig.dataset.target = String(k);
  ui.map.fig.dataset.range = JSON.stringify([lo, hi]);
  panel.range = [lo, hi];

  for (const c of d.grid) {
    const cell = ui.cells.get(c);
    if (!cell) continue;
    const [clo, chi] = s.shared ? [lo, hi] : panel.ranges.get(c);
    const key = `${clo},${chi},${s.key}`;
    if (cell.dataset.drawn !== key) {
      const [ca, coff, , cabs] = mapPart(panel, c);
      const ctx = cell.canvas.getContext("2d");
      const data = ctx.createImageData(w, h);
      paint(ca, coff, hw, cabs, clo, chi, s.lut, A.rgb, s.alpha, data.data);
      ctx.putImageData(data, 0, 0);
      cell.dataset.drawn = key;
    }
  }
  for (const [c, node] of [...ui.cells, ...ui.rows]) {
    node.classList.toggle("sal-selected", c === panel.chosen);
    node.classList.toggle("sal-previewed", previewing && c === k);
    node.setAttribute("aria-selected", String(c === panel.chosen));
  }
  // A contrast the server must compute follows the chosen class, not the one hovered over.
  drawContrast(panel, d.contrast_from_maps ? k : panel.chosen);
}

// The contrast map of `t` and the class it is compared with: from the maps (a vanilla gradient:
// two Jacobian rows, float32 like the server's) or as the server sent it (then marked stale while
// it is another target's).
function drawContrast(panel, t) {
  const { d, A, ui, hw } = panel;
  const v = t !== d.pred ? d.pred : d.runner_up;
  let diff = A.contrast;
  let [ct, cv] = [d.contrast_target, d.contrast_versus];
  if (d.contrast_from_maps && panel.index.has(t) && panel.index.has(v)) {
    const [a, ia, ib] = [A.maps, panel.index.get(t) * hw, panel.index.get(v) * hw];
    diff = new Float64Array(hw);
    for (let j = 0; j < hw; j++) diff[j] = Math.fround(a[ia + j] - a[ib + j]);
    [ct, cv] = [t, v];
  }
  if (!diff) return;
  const current = ct === t && cv === v;
  ui.contrastTitle.textContent = `Why ${label(d, t)} and not ${label(d, v)}?`;
  ui.contrast.fig.classList.toggle("sal-stale", !current);
  const s = panel.s;
  const [lo, hi] = displayRange([[diff, 0, hw, false]], true, s.clip);
  const px = new Uint8ClampedArray(4 * hw);
  paint(diff, 0, hw, false, lo, hi, s.lutSigned, null, null, px);
  setSrc(ui.contrast.img, pictureUrl(ui, panel.w, panel.h, px));
  drawBar(ui.contrastBar, s.lutSigned, lo, hi, Math.max(280, panel.w * d.scale));
  ui.contrast.cap.textContent = current
    ? `Map of ${d.symbol}[${ct}] − ${d.symbol}[${cv}]: red pixels, when brighter, favour ` +
      `${label(d, ct)}; blue ones favour ${label(d, cv)}. Signed, on its own symmetric scale ` +
      `(${fmtG(lo, 3)} … ${fmtG(hi, 3)}).`
    : `Updating… (this is the map of ${d.symbol}[${ct}] − ${d.symbol}[${cv}])`;
}

function buildGrid(panel) {
  const { d, ui } = panel;
  ui.grid.replaceChildren();
  ui.cells.clear();
  for (const c of d.grid) {
    if (!panel.index.has(c)) continue;
    const cell = el("button", "sal-cell", ui.grid, { type: "button", role: "option" });
    cell.dataset.k = String(c);
    if (c === d.pred) cell.classList.add("sal-pred");
    else if (c === d.true) cell.classList.add("sal-true");
    cell.canvas = el("canvas", "sal-thumb", cell);
    cell.canvas.width = panel.w;
    cell.canvas.height = panel.h;
    cell.canvas.style.width = `${d.grid_px}px`;
    const marks = (c === d.pred ? " · predicted" : "") + (c === d.true ? " · true" : "");
    el("span", "sal-cell-cap", cell).textContent = label(d, c) + marks;
    ui.cells.set(c, cell);
  }
  ui.bars.replaceChildren();
  ui.rows.clear();
  for (const [c, p] of d.bars) {
    const row = el("button", "sal-bar-row", ui.bars, { type: "button", role: "option" });
    row.dataset.k = String(c);
    if (!panel.index.has(c)) row.disabled = true;
    el("span", "sal-bar-label", row).textContent = label(d, c);
    const track = el("span", "sal-bar-track", row);
    const fill = el("span", "sal-bar-fill", track);
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    fill.style.background = c === d.true ? TRUE : c === d.pred ? PREDICTED : OTHER;
    el("span", "sal-bar-value", row).textContent = p.toFixed(4);
    row.title = `${label(d, c)}: p = ${p.toFixed(4)}`;
    ui.rows.set(c, row);
  }
}

function exportFiles(panel, kind) {
  const { d, A, hw, w, h } = panel;
  const k = panel.chosen;
  const e = d.export;
  const stem = `${e.before}${k}${e.after}`;
  const [a, off, , abs] = mapPart(panel, k);
  const [lo, hi] = mainRange(panel, k);
  if (kind === "png") {
    // The overlay, each pixel a scale × scale block: the server's render.upscale.
    const s = d.scale;
    const small = new Uint8ClampedArray(4 * hw);
    paint(a, off, hw, abs, lo, hi, panel.s.lut, A.rgb, panel.s.alpha, small);
    const big = new Uint8ClampedArray(4 * hw * s * s);
    for (let y = 0; y < h * s; y++) {
      for (let x = 0; x < w * s; x++) {
        const from = 4 * (Math.floor(y / s) * w + Math.floor(x / s));
        big.set(small.subarray(from, from + 4), 4 * (y * w * s + x));
      }
    }
    const c = document.createElement("canvas");
    c.width = w * s;
    c.height = h * s;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(w * s, h * s);
    img.data.set(big);
    ctx.putImageData(img, 0, 0);
    c.toBlob((blob) => save(blob, `${stem}.png`), "image/png");
  } else if (kind === "npy") {
    const values = new Float64Array(hw);
    for (let j = 0; j < hw; j++) values[j] = abs ? Math.abs(a[off + j]) : a[off + j];
    save(new Blob([npy(values, [h, w])], { type: "application/octet-stream" }), `${stem}.npy`);
  } else {
    const json = structuredClone(e.json);
    Object.assign(json.settings, panel.s.view);
    if (k !== d.target) {
      json.settings.target = String(k);
      json.target = k;
    }
    json.display_range = [lo, hi];
    save(new Blob([JSON.stringify(json, null, 2)], { type: "application/json" }), `${stem}.json`);
  }
}

function wire(root, panel) {
  const ui = panel.ui;
  const classOf = (e) => {
    const node = e.target.closest && e.target.closest(".sal-cell, .sal-bar-row");
    if (!node || !root.contains(node) || node.disabled) return null;
    return Number(node.dataset.k);
  };
  const preview = (k) => {
    if (!panel.ready || !panel.local) return;
    const show = k ?? panel.chosen;
    if (show === panel.shown) return;
    panel.shown = show;
    draw(panel, show, k !== null && k !== panel.chosen);
  };
  for (const area of [ui.grid, ui.bars]) {
    area.addEventListener("mouseover", (e) => {
      const k = classOf(e);
      if (k !== null) preview(k);
    });
    area.addEventListener("mouseleave", () => preview(null));
    area.addEventListener("focusin", (e) => {
      const k = classOf(e);
      if (k !== null) preview(k);
    });
    area.addEventListener("focusout", () => preview(null));
    area.addEventListener("click", (e) => {
      const k = classOf(e);
      if (k === null || !panel.ready) return;
      panel.seq += 1;
      if (panel.local) {
        panel.over.target = { v: k, t: performance.now(), seq: panel.seq };
        redraw(panel);
        panel.ui.controls?.set.target?.(targetChoice(panel));
      } else {
        ui.status.textContent = "Updating…";
      }
      panel.host.pick(k, panel.seq);
    });
  }
  for (const kind of ["png", "npy", "json"]) {
    ui[kind].addEventListener("click", () => panel.ready && exportFiles(panel, kind));
  }
}

// A panel in `root` (emptied), for a host (see the top of this file).
function makePanel(root, host) {
  const panel = { ui: build(root), root, host, seq: 0, over: {}, own: {}, shown: null };
  panel.layout = "";
  panel.ui.root = root;
  wire(root, panel);
  return panel;
}

// Draw the data `d` with its arrays `A` (the server's, or the explore route's).
function show(panel, d, A) {
  const [n, h, w] = d.arrays.maps.shape;
  if (d.classes.length !== n) throw new Error("maps and classes differ in number");
  Object.assign(panel, { d, A, h, w, hw: h * w });
  panel.index = new Map(d.classes.map((k, i) => [k, i]));
  // With other models' maps on one shared scale, another target needs their new maps first.
  panel.local = !Object.keys(A).some((name) => name.startsWith("extra"));
  const layout = JSON.stringify([d.arrays.maps.id, d.grid, d.bars, d.pred, d.true, d.grid_px]);
  if (panel.layout !== layout) {
    panel.layout = layout;
    buildGrid(panel);
  }
  for (const cell of panel.ui.cells.values()) delete cell.dataset.drawn;

  // What the host confirmed (or never will) is its again; newer changes and clicks of ours
  // stay until it has seen them.
  const now = performance.now();
  for (const [k, o] of Object.entries(panel.over)) {
    const seen = o.seq ? d.seq >= o.seq : FROM_DATA[k](d) === o.v;
    if (seen || now - o.t > HOLD_MS) delete panel.over[k];
  }
  settle(panel);
  if (d.own_controls) showControls(panel);
  panel.shown = panel.chosen;

  const ui = panel.ui;
  ui.seen.cap.textContent = d.image_caption;
  const px = new Uint8ClampedArray(4 * panel.hw);
  for (let j = 0; j < panel.hw; j++) {
    px[4 * j] = A.rgb[3 * j];
    px[4 * j + 1] = A.rgb[3 * j + 1];
    px[4 * j + 2] = A.rgb[3 * j + 2];
    px[4 * j + 3] = 255;
  }
  setSrc(ui.seen.img, pictureUrl(ui, w, h, px));
  for (const f of [ui.seen, ui.map, ui.overlay, ui.contrast]) {
    f.img.style.width = `${w * d.scale}px`;
  }
  ui.barsNote.textContent = d.bars_note;
  ui.barsNote.hidden = !d.bars_note;
  ui.gridTitle.textContent = d.grid_title;
  ui.gridNote.textContent = d.grid_note;
  ui.exportNote.textContent = d.export.note;
  draw(panel, panel.chosen, false);
  ui.status.textContent = "";
  panel.ready = true;
  panel.host.shown?.(panel, d);
}

