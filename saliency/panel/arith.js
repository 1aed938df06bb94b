// The saliency panel's shared core, part 1 of 2 (part 2: panel.js): the payload, the arrays held
// by content, numpy's arithmetic operation for operation (so each pixel equals
// saliency.display's), and the files the exports write. Environment-neutral: no host's DOM.
//
// One source, two hosts. saliency/panel/__init__.py `source(host)` joins arith.js, panel.js
// and one entry point into one ES module: streamlit.js (the dashboard's Explore view,
// Streamlit components v2 calls its default export with a component object) or widget.js
// (saliency.widget, an anywidget: its default export returns `{ render }`).

const PAYLOAD_VERSION = 2; // saliency.panel.VERSION: the payload's fields (PanelData)
// PanelData's fields, every one of them in each payload (tests/library/test_notebook.py reads
// this list and the dataclass's).
const PAYLOAD_FIELDS = [
  "classes", "target", "pred", "true", "runner_up", "grid", "bars", "labels",
  "absolute_of_signed", "signed", "alpha", "clip", "shared", "cmap", "cmap_signed", "sign",
  "scale_view", "controls", "sign_local", "scale_local", "symbol", "map_of", "scale", "grid_px",
  "image_caption", "grid_title", "grid_note", "bars_note", "contrast_from_maps",
  "contrast_target", "contrast_versus", "export", "seq", "route", "fallback", "alive",
  "own_controls", "target_choices", "target_choice", "version",
];
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
  if (d.version !== PAYLOAD_VERSION) throw new Error(`payload version ${d.version}`);
  const absent = PAYLOAD_FIELDS.filter((f) => !(f in d));
  if (absent.length) throw new Error(`payload without ${absent.join(", ")}`);
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

// The arrays `d.arrays` names, this payload's or earlier ones'; null (and asked for again,
// `onMissing(ids)`) when some are missing.
function arrays(d, onMissing) {
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
      onMissing(fresh);
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
