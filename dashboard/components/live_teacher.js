// The Live class's teacher's browser gets a cookie of its own (see live_watch.py's
// keep_teacher_key): the page's single-use pass is POSTed to the server's route, which answers
// with an HttpOnly cookie. Once per page and room; the trigger "stored" then tells the session,
// which stops mounting this. Nothing is written into the page.

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const sent = parentElement.liveKeySent || (parentElement.liveKeySent = {});
  if (sent[data.pass]) return;
  sent[data.pass] = true;
  fetch(data.url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ room: data.room, pass: data.pass }),
    credentials: "same-origin",
    cache: "no-store",
  })
    .then((r) => {
      if (r.ok) setTriggerValue("stored", data.room);
    })
    .catch((err) => console.warn("live class: the teacher's cookie was not set", err));
}
