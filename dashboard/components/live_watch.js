// The Live class's watcher (see live_watch.py): reads the room's status from the server's
// route every `every_ms`, shows the count of answers or of students when asked to, and (unless
// `notify` is false: another watcher of the page does it) sends the trigger "changed" once
// when the latest round is not the one the page shows.
//
// The state lives on the element, so a rerun that sends new data restarts one timer, never a
// second. A failed read (a network blip, a server restarting) is tried again at the next tick:
// Streamlit's own banner tells the user when the server is gone. A 429 (this address asked too
// often: dashboard/rate_limits.py) waits the Retry-After it names before the next read.

function metric(box, label) {
  if (!box.liveCount || box.liveCount.label.textContent !== label) {
    box.replaceChildren();
    const title = document.createElement("div");
    title.className = "live-count-label";
    title.textContent = label;
    const value = document.createElement("div");
    value.className = "live-count-value";
    const note = document.createElement("div");
    note.className = "live-count-note";
    box.append(title, value, note);
    box.liveCount = { label: title, value, note };
  }
  return box.liveCount;
}

function show(box, count) {
  const [answers, students] = count;
  const m = metric(box, "Answers so far");
  m.value.textContent = String(answers);
  m.note.textContent = `of ${students} students; they can change them until the reveal.`;
  box.dataset.answers = String(answers);
}

function showStudents(box, students) {
  const m = metric(box, "Students in the class");
  m.value.textContent = String(students);
  box.dataset.students = String(students);
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let box = parentElement.querySelector(".live-watch");
  if (!box) {
    box = document.createElement("div");
    box.className = "live-watch";
    parentElement.appendChild(box);
  }
  const w = box.liveWatch || (box.liveWatch = { timer: null, sent: null });
  clearTimeout(w.timer);
  w.data = data;
  if (data.count) show(box, data.count);
  if (data.students != null) showStudents(box, data.students);
  const tick = async () => {
    const d = w.data;
    let wait = d.every_ms;
    try {
      const r = await fetch(`${d.url}?room=${encodeURIComponent(d.room)}`, { cache: "no-store" });
      if (r.status === 429) {
        const seconds = Number(r.headers.get("Retry-After"));
        if (seconds > 0) wait = Math.max(wait, Math.min(seconds, 60) * 1000);
      }
      if (r.ok) {
        const s = await r.json();
        box.dataset.round = String(s.round);
        box.dataset.state = s.state;
        if (d.count) show(box, [s.round === d.round ? s.answers : 0, s.students]);
        if (d.students != null) showStudents(box, s.students);
        const now = `${s.round}/${s.state}`;
        const moved = s.round !== d.round || s.state !== d.state;
        if (d.notify !== false && moved && w.sent !== now) {
          w.sent = now;
          setTriggerValue("changed", now);
        }
      }
    } catch (err) {
      console.warn("live class: status not read, trying again", err);
    }
    if (w.data === d) w.timer = setTimeout(tick, wait);
  };
  w.timer = setTimeout(tick, data.every_ms);
  return () => {
    clearTimeout(w.timer);
    w.data = null;
  };
}
