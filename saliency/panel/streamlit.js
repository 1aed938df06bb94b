// The saliency panel's entry point in the dashboard (Explore; after arith.js and panel.js,
// joined by saliency.panel.source("streamlit")). Streamlit components v2 calls the default
// export with a component object: its `data` (the payload, dashboard/components/saliency_panel.py)
// and `setTriggerValue` / `setStateValue`.
//
// Sent back: state "alive" (true: drawn, once the server hasn't heard so yet; false: failed
// where the server didn't draw its own pictures, which it then does), state "settings"
// ({cmap, cmap_signed, alpha, clip, scale, sign}), trigger "pick" ({k, seq}: k a class number,
// "predicted" or "true"), trigger "missing" (ids of arrays this page no longer holds).
//
// The colour map, signed colour map, alpha, clip, colour scale, sign and target class are the
// panel's own switches (panel.js `buildControls`, payload `own_controls`): a change is drawn at
// once and sent as state "settings" (every setting as shown; a target as trigger "pick", as a
// class clicked), which reruns the view's fragment; the server's data then confirms it. The
// sidebar draws those controls only where the server draws its own pictures (the fallback).
// Another method, class score, model or test image needs new maps: for public content the
// server's explore route answers with the payload its rerun will bring, asked for as the
// sidebar shows the change (`follow`), or fetched ahead, for Next, and drawn before the rerun
// arrives (`askRoute`). A mouse press on a method, model or score in the sidebar, or on Next or
// Previous, asks for what it will choose while the button is still down, and is taken back if
// no click follows (`pressed`). This is the only file that reads Streamlit's DOM, and only for
// those (issue 31 would make Next and Previous the panel's too).

// When the user last pressed, clicked or typed anywhere: a picker that changes without that is
// the server's doing (a new page, a reset), and the server's data brings it.
let lastInput = -Infinity;
for (const kind of ["pointerdown", "keydown", "input", "change"]) {
  document.addEventListener(kind, () => (lastInput = performance.now()), true);
}
const INPUT_MS = 2000;

// The sidebar's method, class score or model changed: ask the route for what it shows now.
function follow(panel) {
  if (!panel.ready) return;
  const mine = performance.now() - lastInput <= INPUT_MS;
  const ask = {};
  for (const [k, v] of Object.entries(readRouted(panel))) {
    const before = panel.seen[k];
    if (v === undefined) continue;
    panel.seen[k] = v; // not the user's: a new baseline
    if (mine && before !== undefined && before !== v) ask[k] = v;
  }
  if (Object.keys(ask).length) askRoute(panel, ask);
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

// What a press or click on `target` would change in each panel: [[panel, change, k]]: a
// method or model in the sidebar's open list (k "method", "model"), a class score (k
// "score"), Next or Previous (k null), each only where it differs from what the panel shows.
// (The colours, sign and target are the panel's own switches: they need no guessing.)
const PRESSABLE = '[role="option"], button, [role="radiogroup"] label';

function intents(target) {
  const on = target.closest && target.closest(PRESSABLE);
  if (!on || on.closest(".sal-panel")) return [];
  const out = [];
  for (const p of PANELS) {
    const r = p.ready && p.d.route;
    if (!r) continue;
    let k = null;
    let v;
    if (on.matches('[role="option"]')) {
      const box = document.querySelector(
        '[data-testid="stSidebar"] input[role="combobox"][aria-expanded="true"]',
      );
      const label = box && box.getAttribute("aria-label");
      const text = on.innerText.trim();
      if (label === r.labels.method) [k, v] = ["method", r.methods[text]];
      else if (label === r.labels.model) [k, v] = ["model", r.models[text]];
    } else if (on.matches("label")) {
      const group = on.closest('[role="radiogroup"]');
      const input = on.querySelector('input[type="radio"]');
      const i = input ? Number(input.value) : Number.NaN;
      if (!group.closest('[data-testid="stSidebar"]') || !Number.isInteger(i)) continue;
      if (group.getAttribute("aria-label") === r.labels.score) [k, v] = ["score", r.scores[i]];
    } else {
      const text = on.innerText.trim();
      const i = text === r.buttons.next ? r.next : text === r.buttons.previous ? r.previous : null;
      if (i !== null && i !== undefined) out.push([p, { index: String(i) }, null]);
      continue;
    }
    if (k && v !== undefined && v !== p.seen[k]) out.push([p, { [k]: v }, k]);
  }
  return out;
}

// Asked for at the press, not the click: what the press will choose shows while the button is
// still down (a person holds it ~100 ms; the page's own handling of the click then takes ~80
// ms more on one core), and is taken back if the press ends without a click on it (dragged
// away).
const PRESS_GRACE_MS = 400;

function pressed(e) {
  if (e.pointerType === "touch") return; // a finger on a list may be scrolling it: the click asks
  for (const [p, change, k] of intents(e.target)) {
    p.pressed = { on: e.target.closest(PRESSABLE), change, k };
    if (!k) p.browsing = true;
    askRoute(p, change);
  }
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
  panel.pressed = null;
  try {
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
// the one `follow` knows. A click without a press (from the keys) asks now.
function clicked(e) {
  const on = e.target.closest && e.target.closest(PRESSABLE);
  const confirmed = new Set();
  for (const p of PANELS) {
    const press = p.pressed;
    if (!press || !on || press.on !== on) continue; // released elsewhere: taken back
    p.pressed = null;
    if (press.k) p.seen[press.k] = press.change[press.k];
    confirmed.add(p);
  }
  for (const [p, change, k] of intents(e.target)) {
    if (confirmed.has(p)) continue;
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

// What the dashboard's panel does beside drawing: its switches reach the server, and the route.
const STREAMLIT_HOST = {
  setting(panel, settings) {
    panel.setStateValue("settings", settings); // explore.py `_on_settings`
  },
  shown(panel, d) {
    if (!panel.seen) {
      panel.seen = {};
      panel.seq = d.seq; // the session's last pick (a panel drawn again after another page)
      watch(panel);
    }
    for (const [k, v] of Object.entries(readRouted(panel))) {
      if (v !== undefined && panel.seen[k] === undefined) panel.seen[k] = v; // a first look
    }
    remember(panel, d);
    prefetch(panel);
  },
};

function render(component, d) {
  const { parentElement, setTriggerValue } = component;
  let root = parentElement.querySelector(".sal-panel");
  if (!root) root = el("div", "sal-panel", parentElement);
  if (!root.salPanel) {
    const pick = (k, seq) => root.salPanel.setTriggerValue("pick", { k, seq });
    root.salPanel = makePanel(root, { ...STREAMLIT_HOST, pick });
  }
  const panel = root.salPanel;
  panel.setTriggerValue = setTriggerValue;
  panel.setStateValue = component.setStateValue;
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
  const A = arrays(d, (ids) => setTriggerValue("missing", ids));
  if (!A) {
    panel.ui.status.textContent = "Loading the maps…";
    return false;
  }
  panel.server = { d, A };
  show(panel, d, A);
  return true;
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
