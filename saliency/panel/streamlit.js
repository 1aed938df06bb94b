// The saliency panel's entry point in the dashboard (Explore; after arith.js and panel.js,
// joined by saliency.panel.source("streamlit")). Streamlit components v2 calls the default
// export with a component object: its `data` (the payload, dashboard/components/saliency_panel.py)
// and `setTriggerValue` / `setStateValue`.
//
// Sent back: state "alive" (true: drawn, once the server hasn't heard so yet; false: failed
// where the server didn't draw its own pictures, which it then does), state "settings"
// ({cmap, cmap_signed, alpha, clip, scale, sign}), trigger "pick" ({k, seq}: k a class number,
// "predicted" or "true"), trigger "step" ({index}: Next or Previous), trigger "choose"
// ({key, value}: a method, class score or model), trigger "missing" (ids of arrays this page
// no longer holds).
//
// The colour map, signed colour map, alpha, clip, colour scale, sign and target class are the
// panel's own switches (panel.js `buildControls`, payload `own_controls`): a change is drawn at
// once and sent as state "settings" (every setting as shown; a target as trigger "pick", as a
// class clicked), which reruns the view's fragment; the server's data then confirms it. The
// sidebar draws those controls only where the server draws its own pictures (the fallback).
// So are Next and Previous and the method, class score and model pickers, where the server's
// explore route can answer (`navigation`): the view they show is drawn from the route's
// payload (fetched ahead, for Next) before the server's rerun brings it; meanwhile the sidebar
// draws no method or score box, and its model box hides (panel.css). Elsewhere (an uploaded or
// drawn image, models compared, no route) those are the sidebar's: the panel draws the rerun's
// payload. This file reads nothing of Streamlit's page.

// --- the explore route: the view Next, Previous or a picker shows, before the server's rerun
//
// Another image, method, class score or model needs new gradients, so the panel can't draw it
// from what it holds. But for public content (a bundled test image or a workspace's, a registry
// model) the server answers the view's query on a route of its own (dashboard/serve.py,
// explore.route_payload) with the payload its rerun will bring: asked for at the click (or
// fetched ahead, for Next), it is drawn about a round trip and a page render sooner. The rerun's
// data then confirms it; an older rerun's, arriving in between, is held back a while.

const ROUTE_HOLD_MS = 3000;
const ROUTE_FIRST_MS = 1000; // the longest a choice's rerun waits for the route's answer

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
  return fetchPayload(url)
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
// colours: an image seen before (Previous, back to it) is drawn again at the click from the
// arrays still held, asking the server nothing.
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

// Next and Previous, the panel's own (labels `route.buttons`) where the route can answer: the
// image each shows is drawn at once from the route, and the server hears of it (trigger
// "step"), whose rerun then shows it everywhere else (the image chooser, the heading, the link).
// Beside them, the pickers (`pickers`).
function navigation(panel) {
  const r = panel.d.route;
  let nav = panel.ui.nav;
  if (!nav) {
    const box = el("div", "sal-nav", null);
    const button = (which) => {
      const b = el("button", "sal-button", box, { type: "button" });
      b.addEventListener("click", () => step(panel, which));
      return b;
    };
    nav = panel.ui.nav = { box, previous: button("previous"), next: button("next") };
    panel.ui.root.prepend(box);
  }
  nav.box.hidden = !r;
  // The image chooser's own Previous and Next hide while these show (panel.css).
  document.documentElement.dataset.salNav = r ? "on" : "off";
  pickers(panel, nav.box);
  if (!r) return;
  for (const which of ["previous", "next"]) {
    nav[which].textContent = r.buttons[which];
    nav[which].disabled = r[which] === null || r[which] === undefined;
  }
}

// The method, class score and model pickers (`route.pickers`: labels and [value, text]
// choices), made again where their choices change and removed where the route can't answer
// (the sidebar's boxes show then: panel.css hides the model box only while these exist).
// Each shows the view asked of the route, else the one drawn.
function pickers(panel, box) {
  const r = panel.d.route;
  const p = r && r.pickers;
  const key = JSON.stringify(p ?? null);
  let made = panel.ui.pickers;
  if (made && made.key !== key) {
    made.box.remove();
    made = panel.ui.pickers = null;
  }
  if (!p) return;
  if (!made) {
    const b = el("span", "sal-pickers", box);
    const to = (k) => (v) => choose(panel, k, v);
    const set = {
      method: selectControl(b, p.labels.method, p.methods, to("method")),
      score: radioControl(b, p.labels.score, p.scores, to("score")),
      model: selectControl(b, p.labels.model, p.models, to("model")),
    };
    made = panel.ui.pickers = { box: b, set, key };
  }
  const want = panel.routed ? panel.routed.want : {};
  for (const [k, show] of Object.entries(made.set)) show(want[k] ?? r.query[k]);
}

// A method, class score or model chosen: its view is drawn at once from the route, and then the
// server hears of it (trigger "choose", which reruns the view's fragment, or for a model the page).
// A model asks for the automatic layer (another model's layers), as the server then does; a
// target class the new model lacks is refused by the route (400): the server's rerun, which
// resets it, is then awaited.
function choose(panel, key, value) {
  if (!panel.ready) return;
  panel.ui.status.textContent = "Updating…";
  const asked = askRoute(panel, key === "model" ? { model: value, layer: "" } : { [key]: value });
  // The server hears of it once the route's answer is drawn (or failed, or ROUTE_FIRST_MS
  // passed): its rerun, started at the click, ran beside the route's answer (the server's
  // one interpreter) and beside the drawing (the browser's one thread), and made both later.
  // In the order chosen: each choice waits for those before it.
  const ready = Promise.race([asked, new Promise((ok) => setTimeout(ok, ROUTE_FIRST_MS))]);
  const tell = () => panel.setTriggerValue("choose", { key, value }); // explore.py `_on_choose`
  panel.told = (panel.told || Promise.resolve()).then(() => ready).then(tell, tell);
}

function step(panel, which) {
  const r = panel.d.route;
  const index = r ? r[which] : null;
  if (!panel.ready || index === null || index === undefined) return;
  panel.browsing = true; // someone browsing: Next's image is fetched ahead from now on
  panel.setTriggerValue("step", { index }); // explore.py `_on_step`
  askRoute(panel, { index: String(index) });
}

// What the dashboard's panel does beside drawing: its switches reach the server, and the route.
const STREAMLIT_HOST = {
  setting(panel, settings) {
    panel.setStateValue("settings", settings); // explore.py `_on_settings`
  },
  shown(panel, d) {
    if (!panel.started) {
      panel.started = true;
      panel.seq = d.seq; // the session's last pick (a panel drawn again after another page)
    }
    navigation(panel);
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
