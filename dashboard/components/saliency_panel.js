// The Explore view's saliency panel, drawn in the browser: the image, the target's map with
// its colour bar and the overlay; the class probabilities and the contrast map; every class's
// map; the exports. The server sends each array once (float32 maps exactly as it holds them,
// every colour table) and then only settings; this module does what saliency.display does
// (percentile clip, colour map, overlay) with the same arithmetic, so each pixel equals the
// server's.
//
// What needs no new gradients is drawn here at once: a class hovered over (grid or chart) is
// previewed; a class clicked is shown and sent to the server (trigger "pick"), which updates the
// link, the sidebar's target box and the captions; a colour map, alpha, clip, colour scale,
// sign (vanilla gradient) or target changed in the sidebar is drawn as soon as the page shows
// it, and held until the server's rerun confirms it (`follow`). Another method, class score,
// model or test image needs new maps: for public content the server's explore route answers
// with the payload its rerun will bring, asked for as the page shows the change, or fetched
// ahead, for Next, and drawn before the rerun arrives (`askRoute`). A mouse press on any of
// those in the sidebar, or on Next or Previous, draws (or asks for) what it will choose while
// the button is still down, and is taken back if no click follows (`pressed`).
//
// Data from Python: see dashboard/components/saliency_panel.py and dashboard/views/explore.py.
// Sent back: state "alive" (true: drawn, once the server hasn't heard so yet; false: failed
// where the server didn't draw its own pictures, which it then does),
// trigger "pick" ({k, seq}), trigger "missing" (ids of arrays this page no longer holds).

const ARRAYS = new Map(); // id -> typed array, the most recently used last (every panel)
const MAX_ARRAYS = 64;
const MAX_BYTES = 256 * 2 ** 20;
const ASKED = new Map(); // id -> when it was last asked for again
const PREDICTED = "#ff8c00";
const TRUE = "#28aa3c";
const OTHER = "#9aa5b1";

// The payload (saliency_panel.py's `pack`): "SAL1", the JSON's length, the JSON, then the
// arrays' raw bytes at 8-byte boundaries.
function unpack(u8) {
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const magic = String.fromCharCode(u8[0], u8[1], u8[2], u8[3]);
  if (magic !== "SAL1") throw new Error("not a saliency panel payload");
  const n = view.getUint32(4, true);
  const d = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + n)));
  const base = 8 + n + ((8 - (n % 8)) % 8);
  for (const ref of Object.values(d.arrays)) {
    if (ref.at === undefined) continue;
    const raw = u8.slice(base + ref.at, base + ref.at + ref.nbytes); // its own, aligned buffer
    if (!ARRAYS.has(ref.id)) ARRAYS.set(ref.id, typed(raw, ref.dtype));
  }
  return d;
}

function typed(raw, dtype) {
  if (dtype === "<f4") return new Float32Array(raw.buffer);
  if (dtype === "<f8") return new Float64Array(raw.buffer);
  if (dtype === "|u1") return raw;
  throw new Error(`unexpected dtype ${dtype}`);
}

// The arrays `d.arrays` names, this payload's or earlier ones'; null (and asked for again)
// when some are missing.
function arrays(d, setTriggerValue) {
  const out = {};
  const lost = [];
  for (const [name, ref] of Object.entries(d.arrays)) {
    const a = ARRAYS.get(ref.id);
    if (a === undefined) {
      lost.push(ref.id);
      continue;
    }
    ARRAYS.delete(ref.id); // most recently used last
    ARRAYS.set(ref.id, a);
    out[name] = a;
  }
  let total = 0;
  for (const a of ARRAYS.values()) total += a.byteLength;
  const used = new Set(Object.values(d.arrays).map((r) => r.id));
  while (ARRAYS.size > MAX_ARRAYS || (total > MAX_BYTES && ARRAYS.size > used.size)) {
    const [id, a] = ARRAYS.entries().next().value;
    if (used.has(id)) break;
    ARRAYS.delete(id);
    total -= a.byteLength;
  }
  if (lost.length) {
    const now = performance.now();
    const fresh = lost.filter((id) => now - (ASKED.get(id) ?? -1e9) > 3000);
    if (fresh.length) {
      for (const id of fresh) ASKED.set(id, now);
      setTriggerValue("missing", fresh);
    }
    return null;
  }
  return out;
}

// --- numpy's arithmetic, operation for operation -------------------------------------------

// np.round: halves to even.
function rint(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// The k-th smallest of a[0..n) (Wirth's selection; reorders a).
function kth(a, n, k) {
  let l = 0;
  let m = n - 1;
  while (l < m) {
    const x = a[k];
    let i = l;
    let j = m;
    do {
      while (a[i] < x) i++;
      while (x < a[j]) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    } while (i <= j);
    if (j < k) l = i;
    if (k < i) m = j;
  }
  return a[k];
}

// np.percentile(a[:n], p) with its default method ("linear"), as numpy computes it.
function percentile(a, n, p) {
  const q = p / 100;
  const vi = (n - 1) * q;
  if (vi >= n - 1) {
    let top = -Infinity;
    for (let i = 0; i < n; i++) if (a[i] > top) top = a[i];
    return top;
  }
  const prev = Math.floor(vi);
  const lo = kth(a, n, prev);
  let hi = Infinity;
  for (let i = prev + 1; i < n; i++) if (a[i] < hi) hi = a[i];
  const g = vi - prev;
  const d = hi - lo;
  return g >= 0.5 ? hi - d * (1 - g) : lo + d * g;
}

// saliency.display.display_range of the maps `parts` ([array, offset, length, absolute]).
function displayRange(parts, signed, clip) {
  let total = 0;
  for (const [, , len] of parts) total += len;
  const vals = new Float64Array(total);
  let n = 0;
  let least = Infinity;
  for (const [a, off, len, absolute] of parts) {
    for (let j = off; j < off + len; j++) {
      const v = absolute ? Math.abs(a[j]) : a[j];
      if (Number.isFinite(v)) {
        vals[n++] = signed ? Math.abs(v) : v;
        if (v < least) least = v;
      }
    }
  }
  if (n === 0) return signed ? [-1, 1] : [0, 1];
  if (signed) {
    const hi = percentile(vals, n, clip) || 1.0;
    return [-hi, hi];
  }
  const lo = least < 0 ? least : 0;
  const hi = percentile(vals, n, clip);
  return [lo, hi > lo ? hi : lo + 1];
}

// saliency.display.render at scale 1: a[off..off+hw) -> RGBA, over the image when alpha isn't
// null.
function paint(a, off, hw, absolute, lo, hi, lut, img, alpha, out) {
  const span = hi - lo;
  const keep = 1 - alpha;
  for (let j = 0; j < hw; j++) {
    let v = a[off + j];
    if (absolute) v = Math.abs(v);
    let t = (v - lo) / span;
    t = t > 1 ? 1 : t < 0 ? 0 : t;
    if (t !== t) t = 0; // NaN: np.nan_to_num
    const c = 3 * rint(t * 255);
    let r = lut[c];
    let g = lut[c + 1];
    let b = lut[c + 2];
    if (alpha !== null) {
      r = rint(keep * img[3 * j] + alpha * r);
      g = rint(keep * img[3 * j + 1] + alpha * g);
      b = rint(keep * img[3 * j + 2] + alpha * b);
    }
    out[4 * j] = r;
    out[4 * j + 1] = g;
    out[4 * j + 2] = b;
    out[4 * j + 3] = 255;
  }
  return out;
}

// format(x, ".{p}g") in Python: p significant digits, halves rounded to even (toPrecision
// would round them up), exponent form below 1e-4 and from 10^p.
function fmtG(x, p) {
  if (!Number.isFinite(x)) return x > 0 ? "inf" : x < 0 ? "-inf" : "nan";
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  if (x === 0) return `${sign}0`;
  const [m, ex] = Math.abs(x).toExponential(Math.min(100, p + 25)).split("e");
  const all = m.replace(".", "");
  let digits = all.slice(0, p);
  let e = Number(ex);
  const rest = all.slice(p);
  const odd = Number(digits[p - 1]) % 2 === 1;
  if (rest[0] > "5" || (rest[0] === "5" && (/[1-9]/.test(rest.slice(1)) || odd))) {
    digits = String(BigInt(digits) + 1n);
    if (digits.length > p) {
      digits = digits.slice(0, p);
      e += 1;
    }
  }
  const strip = (s) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
  if (e < -4 || e >= p) {
    const mant = strip(`${digits[0]}.${digits.slice(1)}`);
    return `${sign}${mant}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  const fixed =
    e >= 0
      ? `${digits.slice(0, e + 1)}.${digits.slice(e + 1)}`
      : `0.${"0".repeat(-e - 1)}${digits}`;
  return sign + strip(fixed);
}

// --- files: the same as the server's download buttons make -----------------------------

// np.save of a float32 array, byte for byte (format 1.0: numpy's header, room to grow the
// first axis, spaces to a multiple of 64 bytes, a newline).
function npy(values, shape) {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(", ");
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  header += " ".repeat(Math.max(0, 21 - String(shape[0]).length));
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += `${" ".repeat(pad)}\n`;
  const out = new Uint8Array(10 + header.length + 4 * values.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 255, header.length >> 8]);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(new Uint8Array(Float32Array.from(values).buffer), 10 + header.length);
  return out;
}

function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

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

// --- settings: the server's, or what the sidebar shows before the server has heard of it ---

// Each setting's value in the server's data.
const FROM_DATA = {
  cmap: (d) => d.cmap,
  cmap_signed: (d) => d.cmap_signed,
  alpha: (d) => d.alpha,
  clip: (d) => d.clip,
  sign: (d) => d.sign,
  scale: (d) => d.scale_view,
  target: (d) => d.target,
};
const HOLD_MS = 10_000; // a change the server never confirms is dropped after this

// The sidebar's controls as the page shows them now (undefined: not there, or not a value this
// panel can draw). The page changes them at once; the server hears of them a round trip later.
function readSidebar(panel) {
  const { d, A } = panel;
  const side = document.querySelector('[data-testid="stSidebar"]');
  if (!side) return {};
  const c = d.controls;
  const q = (selector) => side.querySelector(selector);
  const combo = (label) => q(`input[role="combobox"][aria-label="${label}"]`)?.value;
  const number = (label) => {
    const input = q(`input[type="range"][aria-label="${label}"]`);
    const x = input ? Number(input.value) : Number.NaN;
    return Number.isFinite(x) ? x : undefined;
  };
  const choice = (label, options) => {
    const on = q(`[role="radiogroup"][aria-label="${label}"] input[type="radio"]:checked`);
    return on ? options[Number(on.value)] : undefined;
  };
  const known = (name) => (name !== undefined && A[`lut:${name}`] ? name : undefined);
  const out = {
    cmap: known(combo(c.cmap)),
    cmap_signed: known(combo(c.cmap_signed)),
    alpha: number(c.alpha),
    clip: number(c.clip),
    sign: choice(c.sign, c.signs),
    scale: choice(c.scale, c.scales),
  };
  const t = combo(c.target);
  if (t !== undefined) {
    out.target =
      t === c.predicted ? d.pred : t === c.true ? (d.true ?? d.pred) : panel.byLabel.get(t);
  }
  return out;
}

// The settings drawn: the server's, overridden by sidebar changes it hasn't confirmed yet.
function settle(panel) {
  const { d, A, over } = panel;
  const v = (k) => (over[k] ? over[k].v : FROM_DATA[k](d));
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

// When the user last pressed, clicked or typed anywhere: a control that changes without that is
// the server's doing (a new page, a reset), and the server's data brings it.
let lastInput = -Infinity;
for (const kind of ["pointerdown", "keydown", "input", "change"]) {
  document.addEventListener(kind, () => (lastInput = performance.now()), true);
}
const INPUT_MS = 2000;

// The sidebar changed: draw what it shows now.
function follow(panel) {
  if (!panel.ready) return;
  if (performance.now() - lastInput > INPUT_MS) {
    for (const [k, v] of Object.entries({ ...readSidebar(panel), ...readRouted(panel) })) {
      if (v !== undefined) panel.seen[k] = v; // not the user's: a new baseline
    }
    return;
  }
  const ask = {};
  for (const [k, v] of Object.entries(readRouted(panel))) {
    const before = panel.seen[k];
    if (v === undefined) continue;
    panel.seen[k] = v;
    if (before !== undefined && before !== v) ask[k] = v;
  }
  if (Object.keys(ask).length) askRoute(panel, ask);
  const now = readSidebar(panel);
  const t = performance.now();
  let changed = false;
  for (const [k, v] of Object.entries(now)) {
    if (v === undefined) continue;
    const before = panel.seen[k];
    panel.seen[k] = v;
    if (before === undefined || before === v) continue;
    // The target box follows a click in the panel, or the server: neither is a new choice.
    if (k === "target" && (panel.over.target?.seq || v === panel.d.target || !panel.local)) {
      continue;
    }
    panel.over[k] = { v, t };
    changed = true;
  }
  if (changed) {
    settle(panel);
    panel.shown = panel.chosen;
    draw(panel, panel.chosen, false);
  }
}

// --- the explore route: another method, score, model or image before the server's rerun ---
//
// Those need new gradients, so the panel can't draw them from what it holds. But for public
// content (a bundled test image or a workspace's, a registry model) the server answers the
// view's query on a route of its own (dashboard/serve.py, explore.route_payload) with the
// payload its rerun will bring: asked for as soon as the page shows the change (or Next or
// Previous is clicked), it is drawn about a round trip and a page render sooner. The rerun's
// data then confirms it; an older rerun's, arriving in between, is held back a while.

const ROUTE_HOLD_MS = 3000;

// The method, class score and model as the sidebar shows them (the route's names).
function readRouted(panel) {
  const r = panel.d && panel.d.route;
  const side = document.querySelector('[data-testid="stSidebar"]');
  if (!r || !side) return {};
  const combo = (label) =>
    side.querySelector(`input[role="combobox"][aria-label="${label}"]`)?.value;
  const on = side.querySelector(
    `[role="radiogroup"][aria-label="${r.labels.score}"] input[type="radio"]:checked`,
  );
  return {
    method: r.methods[combo(r.labels.method)],
    model: r.models[combo(r.labels.model)],
    score: on ? r.scores[Number(on.value)] : undefined,
  };
}

function routeUrl(panel, want) {
  const r = panel.d.route;
  return `${r.url}?${new URLSearchParams({ ...r.query, ...want, seq: String(panel.d.seq) })}`;
}

function fetchPayload(url) {
  return fetch(url, { cache: "no-store" })
    .then((res) => (res.ok ? res.arrayBuffer() : null))
    .then((buf) => (buf ? unpack(new Uint8Array(buf)) : null));
}

function askRoute(panel, change) {
  if (!panel.d.route) return;
  const want = { ...(panel.routed ? panel.routed.want : {}), ...change };
  const url = routeUrl(panel, want);
  const ticket = (panel.routeTicket = (panel.routeTicket || 0) + 1);
  panel.routed = { want, t: performance.now() };
  const drawn = (d) => {
    const A = d && arrays(d, () => {});
    if (A) show(panel, d, A);
  };
  const again = recalled(panel, want);
  if (again) {
    drawn(again); // seen before in this page: no question to the server
    return;
  }
  const next = panel.prefetched;
  if (next && next.d && next.key === prefetchKey(panel, url)) {
    // Next, fetched ahead: drawn before the page has even handled the click, in the colours
    // (and for the target) shown now: changing those asks for no new maps, so for no new
    // prefetch.
    const d = inColoursShown(panel, next.d);
    if (d.contrast_from_maps) {
      const t = (d.route.query.target = panel.d.route.query.target);
      d.target = t === "predicted" ? d.pred : t === "true" ? (d.true ?? d.pred) : Number(t);
      d.contrast_target = d.target;
      d.contrast_versus = d.target !== d.pred ? d.pred : d.runner_up;
    }
    if (d.classes.includes(d.target) && d.classes.includes(d.contrast_versus)) {
      drawn(d);
      return;
    }
  }
  fetchPayload(url)
    .then((d) => {
      // Dropped when a newer question was asked, or the server's rerun came first.
      if (ticket === panel.routeTicket && panel.routed) drawn(d);
    })
    .catch((err) => console.warn("saliency panel: the explore route failed:", err));
}

// The query's and the data's colour settings: they change no array.
const COLOURS = ["cmap", "cmap_signed", "alpha", "clip", "scale"];
const COLOUR_DATA = ["cmap", "cmap_signed", "alpha", "clip", "scale_view", "shared"];

// The views this page has drawn (the server's and the route's), by their query less the
// colours: a method, model, class score or image seen before (switched back to, compared
// again) is drawn again at the press from the arrays still held, asking the server nothing.
// Only the data is kept; the arrays stay in ARRAYS, by content, under its bounds.
const VIEWS_KEPT = 32;

function viewKey(query) {
  const keys = Object.keys(query).filter((k) => k !== "seq" && !COLOURS.includes(k));
  return JSON.stringify(keys.sort().map((k) => [k, String(query[k])]));
}

function remember(panel, d) {
  if (!d.route) return;
  const views = (panel.views ||= new Map());
  const key = viewKey(d.route.query);
  views.delete(key); // the most recently drawn last
  views.set(key, d);
  while (views.size > VIEWS_KEPT) views.delete(views.keys().next().value);
}

// The view `want` changes to, if drawn before and its arrays are all still held: in the
// colours shown now, and as of the page's last data (`seq`).
function recalled(panel, want) {
  const d = panel.views?.get(viewKey({ ...panel.d.route.query, ...want }));
  if (!d || !Object.values(d.arrays).every((ref) => ARRAYS.has(ref.id))) return null;
  return { ...inColoursShown(panel, d), seq: panel.d.seq };
}

// A copy of the view `d` in the colours the panel shows now (they change no array).
function inColoursShown(panel, d) {
  const out = { ...d, route: { ...d.route, query: { ...d.route.query } } };
  for (const k of COLOURS) out.route.query[k] = panel.d.route.query[k];
  for (const k of COLOUR_DATA) out[k] = panel.d[k];
  return out;
}

// What a prefetched payload is known by: its query less what `askRoute` can set itself.
function prefetchKey(panel, url) {
  const u = new URL(url, location.href);
  for (const k of COLOURS) u.searchParams.delete(k);
  if (panel.d.contrast_from_maps) u.searchParams.delete("target");
  return u.toString();
}

// The image Next shows, fetched once the page is idle: one request per image shown, once
// Next or Previous has been clicked in this page (someone browsing; no speculative work for
// the others).
function prefetch(panel) {
  const r = panel.d.route;
  if (!r || !panel.browsing || r.next === null || r.next === undefined) return;
  const url = routeUrl(panel, { index: String(r.next) });
  const key = prefetchKey(panel, url);
  if (panel.prefetched && panel.prefetched.key === key) return;
  const mine = (panel.prefetched = { key, d: null });
  const idle = window.requestIdleCallback || ((f) => setTimeout(f, 200));
  idle(() => {
    fetchPayload(url)
      .then((d) => {
        mine.d = d;
      })
      .catch(() => {
        if (panel.prefetched === mine) panel.prefetched = null;
      });
  });
}

// Whether the server's data `d` is for the view the route was asked for.
function confirms(d, want) {
  return !!d.route && Object.entries(want).every(([k, v]) => d.route.query[k] === v);
}

// What a press or click on `target` would change in each panel: [[panel, change, k, local]].
// Routed (new maps: the explore route answers): a method or model in the sidebar's open list
// (k "method", "model"), a class score (k "score"), Next or Previous (k null). Local (drawn
// from the maps held, as `follow` draws them): a target class or colour map in the sidebar's
// open list, a colour scale or sign. Only what differs from what the panel shows now.
const PRESSABLE = '[role="option"], button, [role="radiogroup"] label';

function intents(target) {
  const on = target.closest && target.closest(PRESSABLE);
  if (!on || on.closest(".sal-panel")) return [];
  const out = [];
  for (const p of PANELS) {
    if (!p.ready) continue;
    const r = p.d.route;
    const c = p.d.controls;
    let k = null;
    let v;
    if (on.matches('[role="option"]')) {
      const box = document.querySelector(
        '[data-testid="stSidebar"] input[role="combobox"][aria-expanded="true"]',
      );
      const label = box && box.getAttribute("aria-label");
      const text = on.innerText.trim();
      if (r && label === r.labels.method) [k, v] = ["method", r.methods[text]];
      else if (r && label === r.labels.model) [k, v] = ["model", r.models[text]];
      else if (label === c.cmap || label === c.cmap_signed) {
        k = label === c.cmap ? "cmap" : "cmap_signed";
        v = p.A[`lut:${text}`] ? text : undefined;
      } else if (label === c.target && p.local) {
        k = "target";
        const { pred, true: truth } = p.d;
        v = text === c.predicted ? pred : text === c.true ? (truth ?? pred) : p.byLabel.get(text);
      }
    } else if (on.matches("label")) {
      const group = on.closest('[role="radiogroup"]');
      const input = on.querySelector('input[type="radio"]');
      const i = input ? Number(input.value) : Number.NaN;
      const label = group.getAttribute("aria-label");
      if (!group.closest('[data-testid="stSidebar"]') || !Number.isInteger(i)) continue;
      if (r && label === r.labels.score) [k, v] = ["score", r.scores[i]];
      else if (label === c.sign) [k, v] = ["sign", c.signs[i]];
      else if (label === c.scale) [k, v] = ["scale", c.scales[i]];
    } else if (r) {
      const text = on.innerText.trim();
      const i = text === r.buttons.next ? r.next : text === r.buttons.previous ? r.previous : null;
      if (i !== null && i !== undefined) out.push([p, { index: String(i) }, null, false]);
      continue;
    }
    if (!k || v === undefined) continue;
    const local = !["method", "model", "score"].includes(k);
    const now = local ? (p.over[k] ? p.over[k].v : FROM_DATA[k](p.d)) : p.seen[k];
    if (v !== now) out.push([p, { [k]: v }, k, local]);
  }
  return out;
}

// Asked for (or drawn) at the press, not the click: what the press will choose shows while the
// button is still down (a person holds it ~100 ms; the page's own handling of the click then
// takes ~80 ms more on one core), and is taken back if the press ends without a click on it
// (dragged away).
const PRESS_GRACE_MS = 400;

function pressed(e) {
  if (e.pointerType === "touch") return; // a finger on a list may be scrolling it: the click asks
  for (const [p, change, k, local] of intents(e.target)) {
    p.pressed = { on: e.target.closest(PRESSABLE), change, k, local };
    if (local) {
      p.over[k] = { v: change[k], t: performance.now(), press: true };
      redraw(p);
    } else {
      if (!k) p.browsing = true;
      askRoute(p, change);
    }
  }
}

function redraw(panel) {
  settle(panel);
  panel.shown = panel.chosen;
  draw(panel, panel.chosen, false);
}

function released() {
  for (const p of PANELS) {
    const press = p.pressed;
    if (!press) continue;
    setTimeout(() => {
      if (p.pressed === press) takeBack(p);
    }, PRESS_GRACE_MS);
  }
}

// A press that chose nothing: the server's view again.
function takeBack(panel) {
  const press = panel.pressed;
  panel.pressed = null;
  try {
    if (press.local) {
      if (panel.over[press.k]?.press) delete panel.over[press.k];
      redraw(panel);
      return;
    }
    panel.routeTicket = (panel.routeTicket || 0) + 1; // an answer still on its way is dropped
    panel.routed = null;
    const server = panel.server;
    if (server && panel.d !== server.d) show(panel, server.d, server.A);
  } catch (err) {
    console.error("saliency panel:", err); // the server's next data draws it again
  }
}

// The click: what the press on the same option or button asked for stands (the panel may
// already show it: Next's "next" is then another image), and a method, model or score becomes
// the one `follow` knows. A click without a press (from the keys) asks now; a local change
// without one is drawn when the page shows it (`follow`).
function clicked(e) {
  const on = e.target.closest && e.target.closest(PRESSABLE);
  const confirmed = new Set();
  for (const p of PANELS) {
    const press = p.pressed;
    if (!press || !on || press.on !== on) continue; // released elsewhere: taken back
    p.pressed = null;
    if (press.k && !press.local) p.seen[press.k] = press.change[press.k];
    confirmed.add(p);
  }
  for (const [p, change, k, local] of intents(e.target)) {
    if (confirmed.has(p) || local) continue;
    if (k) p.seen[k] = change[k];
    else p.browsing = true;
    askRoute(p, change);
  }
}

document.addEventListener("pointerdown", pressed, true);
document.addEventListener("pointerup", released, true);
document.addEventListener("pointercancel", released, true);
document.addEventListener("click", clicked, true);

const PANELS = new Set();
let watching = false;

function watch(panel) {
  PANELS.add(panel);
  if (watching) return;
  watching = true;
  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      for (const p of PANELS) {
        if (!p.root.isConnected) {
          PANELS.delete(p);
          continue;
        }
        try {
          follow(p);
        } catch (err) {
          console.error("saliency panel:", err); // the server's next data draws it again
        }
      }
    });
  }).observe(document.body, { subtree: true, childList: true, attributes: true });
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
        settle(panel);
        panel.shown = panel.chosen;
        draw(panel, panel.chosen, false);
      } else {
        ui.status.textContent = "Updating…";
      }
      panel.setTriggerValue("pick", { k, seq: panel.seq });
    });
  }
  for (const kind of ["png", "npy", "json"]) {
    ui[kind].addEventListener("click", () => panel.ready && exportFiles(panel, kind));
  }
}

function render(component, d) {
  const { parentElement, setTriggerValue } = component;
  let root = parentElement.querySelector(".sal-panel");
  if (!root) root = el("div", "sal-panel", parentElement);
  if (!root.salPanel) {
    root.salPanel = { ui: build(root), seq: 0, over: {}, seen: null, shown: null, layout: "" };
    root.salPanel.root = root;
    wire(root, root.salPanel);
  }
  const panel = root.salPanel;
  panel.setTriggerValue = setTriggerValue;
  clearTimeout(panel.held);
  const routed = panel.routed;
  if (routed && panel.ready) {
    if (confirms(d, routed.want) || !d.route) {
      panel.routed = null;
    } else {
      // An older rerun's data, the route's answer already drawn: kept back, and drawn only
      // if nothing newer comes.
      const wait = ROUTE_HOLD_MS - (performance.now() - routed.t);
      if (wait > 0) {
        panel.held = setTimeout(() => {
          panel.routed = null;
          try {
            render(component, d);
          } catch (err) {
            console.error("saliency panel:", err); // the server's next data draws it again
          }
        }, wait);
        return true;
      }
      panel.routed = null;
    }
  }
  panel.ready = false;
  const A = arrays(d, setTriggerValue);
  if (!A) {
    panel.ui.status.textContent = "Loading the maps…";
    return false;
  }
  panel.server = { d, A };
  show(panel, d, A);
  return true;
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
  panel.byLabel = new Map(Object.entries(d.labels).map(([k, text]) => [text, Number(k)]));
  for (const cell of panel.ui.cells.values()) delete cell.dataset.drawn;

  // What the server confirmed (or never will) is its again; newer sidebar changes and clicks
  // of ours stay until it has seen them.
  const now = performance.now();
  for (const [k, o] of Object.entries(panel.over)) {
    const seen = o.seq ? d.seq >= o.seq : FROM_DATA[k](d) === o.v;
    if (seen || now - o.t > HOLD_MS) delete panel.over[k];
  }
  if (!panel.seen) {
    panel.seen = {};
    panel.seq = d.seq; // the session's last pick (a panel drawn again after another page)
    watch(panel);
  }
  for (const [k, v] of Object.entries({ ...readSidebar(panel), ...readRouted(panel) })) {
    if (v !== undefined && panel.seen[k] === undefined) panel.seen[k] = v; // a first look
  }
  settle(panel);
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
  remember(panel, d);
  prefetch(panel);
}

export default function (component) {
  const { setStateValue, parentElement } = component;
  const page = document.documentElement;
  let data = {}; // a payload that can't be read is a failure to report
  try {
    data = unpack(component.data);
    if (render(component, data)) {
      page.dataset.salPanel = "ok"; // hides the server's fallback pictures (see the CSS)
      if (!data.alive) setStateValue("alive", true); // the server hasn't heard it yet
    }
  } catch (err) {
    delete page.dataset.salPanel;
    console.error("saliency panel:", err);
    const root = parentElement.querySelector(".sal-panel");
    if (root) {
      root.replaceChildren();
      delete root.salPanel;
    }
    if (!data.fallback) setStateValue("alive", false); // the server then draws its pictures
  }
}
