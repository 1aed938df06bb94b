"""Misclassifications' report and the detail's maps: the true and predicted class's maps and the
contrast that `mistakes.detail` shows, and the gallery as one HTML file of every mistake with
those maps (`saliency.report`), made on a click and held in `mistakes_export.held_exports`."""

from __future__ import annotations

import functools
import hashlib
import secrets

import numpy as np
import streamlit as st

from dashboard import cache, render, reports
from dashboard.render import Style, class_label
from dashboard.sources import Predictions, Workspace
from dashboard.views.mistakes_export import _exporting, held_exports, held_file, model_stem
from saliency import report
from sandbox import worker
from sandbox.images import ImageError

# Session keys of the report.
MIS_REPORT = "mis_report"
MIS_REPORT_GO = "mis_report_go"
MIS_REPORT_HTML = "mis_report_html"

STYLE = Style(signed=False, cmap="inferno", alpha=0.5, clip=99.0, shared=True)
CONTRAST_STYLE = Style(signed=True, cmap="RdBu_r", alpha=0.5, clip=99.0, shared=False)


def detail_maps(model_name: str, image: np.ndarray, true: int, pred: int, versus: int):
    """`(maps, (style, lo, hi), diff, (c_style, c_lo, c_hi))`: the true and predicted class's
    |gradient| maps by class, on one shared scale, and the contrast of `pred` minus `versus`
    on its own: what `detail` shows and the gallery's report holds (cached: either reuses
    the other's)."""
    classes = tuple(sorted({true, pred}))
    computed = cache.class_maps(model_name, image, "gradient", "logit", True, classes)
    maps = dict(zip(classes, computed, strict=True))
    lo, hi = STYLE.range([maps[true], maps[pred]])
    diff = cache.contrast_map(model_name, image, pred, versus, "gradient", "logit")
    c_lo, c_hi = CONTRAST_STYLE.range([diff])
    return maps, (STYLE, lo, hi), diff, (CONTRAST_STYLE, c_lo, c_hi)


# --- the gallery as a report: every mistake with its maps, one HTML file --------------------

REPORT_IMAGES = 100  # mistakes one report holds at most, the gallery's first (its order)


def report_panel(
    model_name: str, src: Workspace, preds: Predictions, indices: np.ndarray, what: dict
) -> None:
    """The gallery's "Download report": the images its filter selects, in its order, each
    with the maps `detail` shows, as one HTML file (`saliency.report`). Computed on a click
    with a progress bar, like the maps' export, up to REPORT_IMAGES images and the report's
    byte bound (the rest counted in it), and held in `held_exports` until replaced."""
    n = len(indices)
    with st.expander(f"📄 A report of these {n:,} images"):
        if n == 0:
            st.caption("The filter selects no image.")
            return
        st.caption(
            f"One HTML file that opens offline: each image with its true and predicted class's "
            f"maps, the contrast and the colour bars, as shown below the gallery; the settings, "
            f"the model's card and sha256. The first {min(n, REPORT_IMAGES):,}"
            + (f" of {n:,} (the rest are counted in it)." if n > REPORT_IMAGES else ".")
        )
        digest = hashlib.blake2b(np.ascontiguousarray(indices, np.int64).data, digest_size=16)
        key = (model_name, src.key, digest.hexdigest())
        mine = st.session_state.get(MIS_REPORT)
        if mine and mine["key"] != key:  # another filter or model: that report is not these
            held_exports().pop(mine["token"])
            mine = st.session_state[MIS_REPORT] = None
        if st.button("Make the report", key=MIS_REPORT_GO, disabled=bool(mine)):
            mine = _make_report(model_name, src, preds, indices, what, key)
        if mine and held_exports().get(mine["token"]) is None:
            st.caption("The report made earlier was dropped to make room: make it again.")
            st.session_state[MIS_REPORT] = None
            return
        if mine:
            stem = model_stem(model_name)
            st.download_button(
                f"📄 Download report (.html, {mine['bytes'] / 2**20:,.1f} MB)",
                data=functools.partial(held_file, mine["token"], "html"),
                file_name=f"report-{stem}-{what['kind']}-{n}.html",
                mime=reports.MIME,
                key=MIS_REPORT_HTML,
                on_click="ignore",
            )


def _mistake_section(model_name: str, src: Workspace, preds: Predictions, index: int):
    """One image of the gallery as `detail` shows it: the image, both classes' maps, the
    contrast and the two colour bars, at the same size; the two probabilities."""
    names = src.classes
    true, pred = int(src.labels[index]), int(preds.predicted[index])
    heading = (
        f"{src.name(index)}: true {class_label(true, names)}, predicted {class_label(pred, names)}"
    )
    try:
        image = src.image(index)
    except ImageError as err:
        return report.Section(heading, note=f"This image can't be read now: {err}")
    versus = true if pred != true else int(preds.top_classes[index, 1])
    maps, (style, lo, hi), diff, (c_style, c_lo, c_hi) = detail_maps(
        model_name, image, true, pred, versus
    )
    scale = render.scale_for(image.shape, 196)
    pictures = [
        ("The image", render.grey(image, scale)),
        (f"|∂ logit[{true}] / ∂x|: true class",
         render.picture(maps[true], lo, hi, style, image=image, scale=scale)),
        (f"|∂ logit[{pred}] / ∂x|: predicted class",
         render.picture(maps[pred], lo, hi, style, image=image, scale=scale)),
        (f"∂ (logit[{pred}] − logit[{versus}]) / ∂x"
         + ("" if versus == true else ": predicted minus runner-up"),
         render.picture(diff, c_lo, c_hi, c_style, scale=scale)),
        (f"Both class maps' scale ({lo:.3g} … {hi:.3g})",
         render.colorbar(lo, hi, style.cmap, width=196)),
        (f"The contrast's scale ({c_lo:.3g} … {c_hi:.3g})",
         render.colorbar(c_lo, c_hi, c_style.cmap, width=196)),
    ]  # fmt: skip
    return report.Section(
        heading,
        images=[(caption, render.png(rgb)) for caption, rgb in pictures],
        probabilities=[
            (f"true: {class_label(true, names)}", float(preds.p_label[index])),
            (f"predicted: {class_label(pred, names)}", float(preds.p_predicted[index])),
        ],
    )


def _make_report(model_name, src, preds, indices, what, key) -> dict | None:
    if not _exporting().acquire(blocking=False):
        st.warning("Another export is being computed on this server: try again in a moment.")
        return None
    shown = indices[:REPORT_IMAGES]
    try:
        bar = st.progress(0.0, text=f"Computing the maps of {len(shown):,} images…")
        sections, size, pictures = [], 0, 0
        for i, index in enumerate(shown):
            if pictures + 6 > report.MAX_IMAGES or size > report.MAX_BYTES - 2**20:
                break  # no more maps computed than the file holds (6 pictures an image)
            section = _mistake_section(model_name, src, preds, int(index))
            size += sum(len(png) * 4 // 3 + 600 for _, png in section.images) + 2_000
            pictures += len(section.images)
            if size > report.MAX_BYTES - 2**20:
                break
            sections.append(section)
            bar.progress((i + 1) / len(shown), text=f"{i + 1:,} of {len(shown):,} images")
        info = cache.model_info(model_name)
        name = cache.display_name(model_name)
        html = report.report_html(
            sections,
            title=f"Misclassifications of {name} on {src.title}",
            settings={
                "view": "misclassifications",
                "dataset": src.key,
                "model": model_name,
                "filter": what,
                "selected": len(indices),
                "images": [int(i) for i in indices[: len(sections)]],
                "method": "gradient",
                "score": "logit",
                "absolute": True,
                "maps": {
                    "cmap": STYLE.cmap,
                    "alpha": STYLE.alpha,
                    "clip": STYLE.clip,
                    "scale": "shared by the two class maps",
                },
                "contrast": {
                    "cmap": CONTRAST_STYLE.cmap,
                    "clip": CONTRAST_STYLE.clip,
                    "scale": "its own, symmetric",
                },
            },
            model_name=name,
            model_card=reports.card_text(info),
            model_sha256=info.weights_sha256,
            omitted=len(indices) - len(sections),
        ).encode("utf-8")
        bar.empty()
    except worker.ModelFailure as err:
        st.error(f"The report could not be made: {render.plain(err)}")
        return None
    finally:
        _exporting().release()
    token = secrets.token_hex(16)
    if not held_exports().put(token, {"html": html}, len(html)):
        st.error("The report is larger than this server holds for downloads: narrow the filter.")
        return None
    mine = {"token": token, "key": key, "bytes": len(html), "n": len(sections)}
    st.session_state[MIS_REPORT] = mine
    return mine
