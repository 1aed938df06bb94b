// The saliency panel's entry point in a notebook (saliency.widget; after arith.js and panel.js,
// joined by saliency.panel.source("widget")). anywidget calls the default export with nothing
// and renders each view with `render({ model, el })`.
//
// Above the panel: image navigation and the method picker. They set the model's `index` and
// `method`; the kernel computes the new maps and sends them back as `_payload` (the same
// PanelData and arrays as the dashboard's). A class click, hover or any of the panel's own
// switches is drawn here and sends nothing: the kernel hears only of images and methods, and
// of a report asked for.

function bytesOf(value) {
  if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return value; // a Uint8Array already
}

function widgetBar(model, root) {
  const bar = el("div", "sal-widget-bar", null);
  root.before(bar);
  const previous = el("button", "sal-button", bar, { type: "button" });
  previous.textContent = "◀ Previous";
  const where = el("span", "sal-widget-where", bar);
  const next = el("button", "sal-button", bar, { type: "button" });
  next.textContent = "Next ▶";
  const name = el("label", "sal-control", bar);
  el("span", "sal-control-name", name).textContent = "Method";
  const method = el("select", "sal-select", name, { "aria-label": "Method" });
  const busy = el("span", "sal-widget-busy", bar);
  const go = (key, value) => {
    busy.textContent = "Computing…";
    model.set(key, value);
    model.save_changes();
  };
  previous.addEventListener("click", () => go("index", Math.max(0, model.get("index") - 1)));
  next.addEventListener("click", () => go("index", model.get("index") + 1));
  method.addEventListener("change", () => go("method", method.value));
  const update = () => {
    const [i, n] = [model.get("index"), model.get("n_images")];
    where.textContent = `Image ${i + 1} of ${n}`;
    previous.disabled = i <= 0;
    next.disabled = i >= n - 1;
    method.replaceChildren();
    for (const [value, text] of model.get("methods")) {
      el("option", "", method, { value }).textContent = text;
    }
    method.value = model.get("method");
    busy.textContent = model.get("error");
  };
  update();
  return { update, busy };
}

// "Download report" (next to the panel's exports): the kernel makes the HTML from the maps it
// sent, for the class and settings shown here, and sends it back as one buffer.
function reportButton(model, panel, busy) {
  const button = el("button", "sal-button sal-report", panel.ui.png.parentNode, { type: "button" });
  button.textContent = "Download report";
  button.title = "One HTML file: the pictures, probabilities, settings, model and versions.";
  button.addEventListener("click", () => {
    if (!panel.ready) return;
    busy.textContent = "Making the report…";
    model.send({ kind: "report", target: panel.chosen, settings: panel.s.view, seq: panel.d.seq });
  });
  const received = (msg, buffers) => {
    if (!msg || msg.kind !== "report") return;
    busy.textContent = msg.error ? `No report: ${msg.error}` : "";
    if (msg.error || !buffers || !buffers.length) return;
    save(new Blob([bytesOf(buffers[0])], { type: "text/html" }), msg.name);
  };
  model.on("msg:custom", received);
  return () => model.off("msg:custom", received);
}

function widgetRender({ model, el: host }) {
  const root = el("div", "sal-panel", host);
  const panel = makePanel(root, { pick() {} }); // a click is drawn here: the kernel needn't know
  root.salPanel = panel;
  const bar = widgetBar(model, root);
  const unreport = reportButton(model, panel, bar.busy);
  const draw = () => {
    try {
      const d = unpack(bytesOf(model.get("_payload")));
      const A = arrays(d, () => {}); // every payload carries all its arrays
      if (A) show(panel, d, A);
      bar.busy.textContent = model.get("error");
    } catch (err) {
      console.error("saliency panel:", err);
      panel.ui.status.textContent = `The panel failed: ${err.message}`;
    }
  };
  const changed = () => {
    bar.update();
    draw();
  };
  model.on("change:_payload", changed);
  model.on("change:error", bar.update);
  draw();
  return () => {
    model.off("change:_payload", changed);
    model.off("change:error", bar.update);
    unreport();
  };
}

export default function () {
  return { render: widgetRender };
}
