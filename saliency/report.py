"""A one-file report of a view: pictures, probabilities, settings and model, in plain HTML.

    >>> html = report_html(
    ...     [Section("Test image #3", images=[("Overlay", png)], probabilities=[("7", 0.98)])],
    ...     title="Why 7?", settings={"method": "gradient"}, model_name="mnist-cnn",
    ... )
    >>> read_report(html)["settings"]
    {'method': 'gradient'}

The file stands alone and opens offline in any browser: pictures are `data:` PNGs, the style
is inline, nothing is fetched and no script runs (a Content-Security-Policy says so too, in case
a browser is asked to). The settings are also embedded as JSON, so `read_report` (or any HTML
parser) gets back exactly what was passed.

Every string given here (a model's name, its card, a caption) is treated as hostile: it is
escaped, stripped of control and bidirectional characters and cut to a bounded length. The
whole document is bounded too: past `max_images` pictures or `max_bytes` bytes, the remaining
sections are left out and the report says how many. Numpy, PIL and the standard library only.
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import json
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

__all__ = ["MAX_BYTES", "MAX_IMAGES", "Section", "default_versions", "read_report", "report_html"]

MAX_IMAGES = 600  # pictures in one report
MAX_BYTES = 24 * 2**20  # of HTML in all; the pictures are most of it
MAX_TEXT = 2_000  # characters of a heading, caption, label or note
MAX_CARD = 100_000  # characters of a model card
MAX_ROWS = 1_000  # probabilities a section lists
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VERSIONED = ("saliency-dashboard", "torch", "torchvision", "numpy", "pillow")
# C0/C1 controls but tab and newline; bidirectional overrides and isolates (a name that reads
# backwards); zero-width characters.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


@dataclass(frozen=True)
class Section:
    """One part of a report: a heading, pictures `(caption, PNG bytes)`, optionally the
    probabilities `(label, p)` in the order to list them, and a note (plain text)."""

    heading: str
    images: Sequence[tuple[str, bytes]] = field(default_factory=list)
    probabilities: Sequence[tuple[str, float]] | None = None
    note: str = ""


def default_versions() -> dict[str, str]:
    """The library versions a report names by default, read from the installed packages'
    metadata (nothing is imported: torch takes seconds): "not installed" where one is not."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    if versions["saliency-dashboard"] == "not installed":  # run from a checkout
        from . import __version__

        versions["saliency-dashboard"] = f"{__version__} (source tree)"
    return versions


def _text(value: object, limit: int = MAX_TEXT) -> str:
    """`value` as escaped, printable text of at most `limit` characters (then "…")."""
    t = _UNSAFE.sub("", str(value))
    if len(t) > limit:
        t = t[: limit - 1] + "…"
    return html.escape(t, quote=True)


def _json_script(value: Any) -> str:
    """JSON that can sit inside <script type="application/json">: `<`, `>` and `&` written as
    \\u escapes, so no string in it can close the element or open a comment; `json.loads`
    reads them back as they were."""
    text = json.dumps(value, ensure_ascii=True, default=str)  # no raw bidi controls either
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _png_uri(data: bytes) -> str:
    if not isinstance(data, bytes | bytearray) or not bytes(data[:8]) == PNG_SIGNATURE:
        raise ValueError("a report's pictures must be PNG bytes")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _probabilities(rows: Sequence[tuple[str, float]]) -> str:
    shown = list(rows)[:MAX_ROWS]
    out = ['<table class="probabilities"><tr><th>class</th><th>probability</th><th></th></tr>']
    for label, p in shown:
        p = float(p)
        width = min(max(p, 0.0), 1.0) * 100 if p == p else 0.0  # NaN: no bar
        out.append(
            f'<tr><td class="label">{_text(label)}</td>'
            f'<td class="p" data-p="{p!r}">{p:.4f}</td>'
            f'<td class="bar"><span style="width:{width:.2f}%"></span></td></tr>'
        )
    out.append("</table>")
    if len(rows) > len(shown):
        out.append(f'<p class="note">{len(rows) - len(shown):,} more classes not listed.</p>')
    return "".join(out)


def _section(section: Section, images: Sequence[tuple[str, bytes]]) -> str:
    parts = [f'<section class="view"><h2>{_text(section.heading)}</h2>']
    if section.note:
        parts.append(f'<p class="note">{_text(section.note)}</p>')
    if images:
        parts.append('<div class="pictures">')
        for caption, png in images:
            parts.append(
                f'<figure><img alt="{_text(caption)}" src="{_png_uri(png)}">'
                f"<figcaption>{_text(caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    if section.probabilities is not None:
        parts.append(_probabilities(section.probabilities))
    parts.append("</section>")
    return "".join(parts)


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
  padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.pictures { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; max-width: 300px; }
img { image-rendering: pixelated; image-rendering: crisp-edges; display: block; }
table { border-collapse: collapse; margin: 0.8em 0; }
td, th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }
td.p { text-align: right; font-variant-numeric: tabular-nums; }
td.bar { width: 220px; } td.bar span { display: block; height: 10px; background: #e8710a; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 0.8em; font-size: 0.85em; }
.note { color: #444; white-space: pre-line; } .left-out { background: #fff4e0; padding: 0.6em; }
"""
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def report_html(
    sections: Sequence[Section],
    *,
    title: str,
    settings: Mapping[str, Any],
    model_name: str,
    model_card: str | None = None,
    model_sha256: str | None = None,
    versions: Mapping[str, str] | None = None,
    omitted: int = 0,
    max_images: int = MAX_IMAGES,
    max_bytes: int = MAX_BYTES,
) -> str:
    """One self-contained HTML document of `sections`, with the settings, the model (its name,
    card and weights' sha256) and the library versions (`default_versions()` when None).

    Sections are kept in order while the pictures number at most `max_images` and the
    document stays under `max_bytes`; the rest are left out, and counted in a note together
    with `omitted` (sections the caller left out before). `settings` must be JSON (other
    values are written as their `str`); `read_report(html)["settings"]` gives it back.
    """
    versions = default_versions() if versions is None else versions
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
        '<meta name="generator" content="saliency.report">',
        f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_text(title)}</h1>",
        f'<p class="model">Model: <b>{_text(model_name)}</b>'
        + (f" · weights sha256 <code>{_text(model_sha256, 128)}</code>" if model_sha256 else "")
        + "</p>",
    ]
    tail = ["<h2>Settings</h2>"]
    settings_json = _json_script(dict(settings))
    pretty = json.dumps(dict(settings), indent=2, ensure_ascii=False, default=str)
    tail.append(f'<pre class="settings">{_text(pretty, MAX_CARD)}</pre>')
    tail.append(f'<script type="application/json" id="settings">{settings_json}</script>')
    tail.append("<h2>Model card</h2>")
    tail.append(
        f'<pre class="card">{_text(model_card, MAX_CARD)}</pre>'
        if model_card
        else '<p class="note">No model card.</p>'
    )
    tail.append('<h2>Versions</h2><table class="versions">')
    for name, version in list(versions.items())[:50]:
        tail.append(f"<tr><td>{_text(name, 100)}</td><td>{_text(version, 100)}</td></tr>")
    tail.append("</table></body></html>")

    size = sum(len(p.encode()) for p in (*head, *tail)) + 1_000  # the note on what's left out
    body, n_images, kept = [], 0, 0
    for section in sections:
        images = list(section.images)
        part = _section(section, images)
        grown = len(part.encode())
        if n_images + len(images) > max_images or size + grown > max_bytes:
            break
        body.append(part)
        size += grown
        n_images += len(images)
        kept += 1
    left_out = len(sections) - kept + max(int(omitted), 0)
    if left_out:
        body.append(
            f'<p class="left-out">{left_out:,} more not included: a report holds at most '
            f"{max_images:,} pictures and {max_bytes / 2**20:,.0f} MB.</p>"
        )
    return "\n".join([*head, *body, *tail]) + "\n"


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[dict] = []
        self.settings_text: list[str] | None = None
        self._in: str | None = None  # "h2", "figcaption", "label", "settings"
        self._buffer: list[str] = []
        self._label = ""
        self._open = False  # inside a <section>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._open = True
            self.sections.append({"heading": "", "images": [], "probabilities": None})
        elif tag == "script" and a.get("id") == "settings":
            self._in, self._buffer = "settings", []
        elif not self._open:
            return
        elif tag == "h2" or tag == "figcaption":
            self._in, self._buffer = tag, []
        elif tag == "img":
            src = a.get("src") or ""
            prefix = "data:image/png;base64,"
            data = base64.b64decode(src[len(prefix) :]) if src.startswith(prefix) else b""
            self.sections[-1]["images"].append(["", data])
        elif tag == "table" and "probabilities" in (a.get("class") or ""):
            self.sections[-1]["probabilities"] = []
        elif tag == "td" and a.get("class") == "label":
            self._in, self._buffer = "label", []
        elif tag == "td" and a.get("class") == "p":
            self.sections[-1]["probabilities"].append((self._label, float(a["data-p"] or "nan")))

    def handle_data(self, data: str) -> None:
        if self._in:
            self._buffer.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._open = False
        text = "".join(self._buffer)
        if self._in == "settings" and tag == "script":
            self.settings_text = [text]
        elif self._in == "h2" and tag == "h2":
            self.sections[-1]["heading"] = text
        elif self._in == "figcaption" and tag == "figcaption":
            self.sections[-1]["images"][-1][0] = text
        elif self._in == "label" and tag == "td":
            self._label = text
        else:
            return
        self._in, self._buffer = None, []


def read_report(text: str) -> dict:
    """What a report holds, read back: `{"settings": dict, "sections": [{"heading": str,
    "images": [(caption, PNG bytes)], "probabilities": [(label, p)] or None}]}` (text as
    shown: escaped characters decoded, cut ones cut)."""
    reader = _Reader()
    reader.feed(text)
    reader.close()
    if reader.settings_text is None:
        raise ValueError("not a report: no settings found")
    for s in reader.sections:
        s["images"] = [(caption, data) for caption, data in s["images"]]
    return {"settings": json.loads(reader.settings_text[0]), "sections": reader.sections}
