"""Explore's report: this view as one self-contained HTML file (the "Download report"
button and its sections). Split from `dashboard.views.explore`, which re-exports every name
(issue 31)."""

from __future__ import annotations

import functools

import saliency
from dashboard import cache, render, reports
from dashboard.render import Style, class_label
from dashboard.views.explore_controls import METHOD_LABELS, SCORE_SYMBOL, _is_pixel
from dashboard.views.explore_explained import Explained
from dashboard.views.explore_route import _bar_classes, _export_stem, _grid_text
from saliency import report


def _report_button(view, info, image, described, ex: Explained, settings: dict) -> None:
    """The "Download report" button: what this view shows, as one self-contained HTML file,
    made from `ex` (already computed, by the model's own process or worker) and the JSON
    export's `settings` when the button is clicked, never on a rerun."""
    model = cache.display_name(view["model"])  # read here: it looks at this session
    compared = {m: cache.display_name(m) for m in ex.compare}
    method = view["method"]
    before, after = _export_stem(view, described)
    build = functools.partial(
        report_sections, dict(view), info, image, described, ex, model, compared
    )

    def html() -> str:
        return report.report_html(
            build(),
            title=f"{model}: {METHOD_LABELS[method]} of {described}",
            settings=settings,
            model_name=model,
            model_card=reports.card_text(info),
            model_sha256=info.weights_sha256,
        )

    reports.button(
        "📄 Download report", html, f"report_{before}{ex.target}{after}.html", "download_report"
    )


def _marks(ex: Explained, k: int) -> str:
    return (" · predicted" if k == ex.pred else "") + (" · true" if k == ex.true else "")


def _report_main(view, info, image, described, ex: Explained, model: str) -> report.Section:
    """The image, its map, the overlay (the "Map as PNG" download, byte for byte) and scale,
    with the probabilities."""
    names = info.class_names
    style, main = ex.style, ex.main
    big = render.scale_for(image.shape)
    symbol = SCORE_SYMBOL[view["score"]]
    what = f"{symbol}[{class_label(ex.target, names)}]"
    if not _is_pixel(view["method"]):
        what = f"{saliency.method_info(view['method']).label} of {what}"
    elif style.signed:
        what = f"∂ {what} / ∂x"
    else:
        what = f"|∂ {what} / ∂x|"
    c, h, w = image.shape
    overlay = render.picture(main, ex.lo, ex.hi, style, image=image, scale=1)
    return report.Section(
        f"{described}: {model} says {class_label(ex.pred, names)} ({ex.probs[ex.pred]:.1%})",
        images=[
            (
                f"What the model sees ({h} × {w}{', RGB' if c == 3 else ''})",
                render.png(render.grey(image, big)),
            ),
            (f"Map: {what}", render.png(render.picture(main, ex.lo, ex.hi, style, scale=big))),
            (f"Overlay (alpha {style.alpha:g})", render.png(render.upscale(overlay, big))),
            (
                f"Colour scale {ex.lo:.3g} … {ex.hi:.3g}",
                render.png(render.colorbar(ex.lo, ex.hi, style.cmap)),
            ),
        ],
        probabilities=[
            (class_label(k, names) + _marks(ex, k), float(ex.probs[k]))
            for k in _bar_classes(ex.probs, ex.true)
        ],
        note=f"{METHOD_LABELS[view['method']]}, model {model} "
        f"({render.accuracy(info.test_accuracy)}). {ex.style.describe(ex.lo, ex.hi)}.",
    )


def _report_contrast(view, names, image, ex: Explained) -> report.Section:
    """Why the target and not the versus class: the signed contrast on its own scale."""
    style, target, versus = ex.style, ex.target, ex.versus
    big = render.scale_for(image.shape)
    symbol = SCORE_SYMBOL[view["score"]]
    c_style = Style(True, view["cmap_signed"], style.alpha, style.clip, False)
    c_lo, c_hi = c_style.range([ex.diff])
    t_label, v_label = class_label(target, names), class_label(versus, names)
    return report.Section(
        f"Why {t_label} and not {v_label}?",
        images=[
            (
                f"{symbol}[{target}] − {symbol}[{versus}]",
                render.png(render.picture(ex.diff, c_lo, c_hi, c_style, scale=big)),
            ),
            (
                f"Colour scale {c_lo:.3g} … {c_hi:.3g}",
                render.png(render.colorbar(c_lo, c_hi, c_style.cmap)),
            ),
        ],
        note=f"Red pixels, when brighter, favour {t_label}; blue ones favour {v_label}. "
        "Signed, on its own symmetric scale.",
    )


def _report_grid(view, names, image, ex: Explained) -> report.Section:
    """The grid of classes' overlays, on the scale the view uses."""
    style = ex.style
    small = render.scale_for(image.shape, 140)
    grid = []
    for k in ex.grid_classes:
        k_lo, k_hi = (ex.lo, ex.hi) if style.shared else style.range([ex.maps[k]])
        rgb = render.thumbnail(render.picture(ex.maps[k], k_lo, k_hi, style, image=image, scale=1),
                               160)  # fmt: skip
        grid.append((class_label(k, names) + _marks(ex, k), render.png(render.upscale(rgb, small))))
    title, note = _grid_text(len(ex.grid_classes), len(names), view["method"], style)
    note = note.replace(" Orange frame: predicted class; green frame: true class.", "")
    return report.Section(title, images=grid, note=note)  # no frames: captions say


def _report_compare(view, image, ex: Explained, model: str, compared: dict) -> report.Section:
    """The compared models' maps beside this one's, on one shared colour scale."""
    style = ex.style
    shown = [(view["model"], model, ex.main)]
    shown += [(m, compared[m], a) for m, a in ex.compare.items()]
    s_lo, s_hi = style.range([a for *_, a in shown])
    scale = render.scale_for(image.shape, 224)
    pictures = [
        (f"{name}: map of class {ex.compare_targets.get(m, ex.target)}",
         render.png(render.picture(a, s_lo, s_hi, style, image=image, scale=scale)))
        for m, name, a in shown
    ]  # fmt: skip
    pictures.append((f"Colour scale {s_lo:.3g} … {s_hi:.3g}",
                     render.png(render.colorbar(s_lo, s_hi, style.cmap))))  # fmt: skip
    note = "The same image and settings, on one shared colour scale."
    return report.Section("Compare models", images=pictures, note=note)


def report_sections(view, info, image, described, ex: Explained, model: str,
                    compared: dict[str, str]) -> list[report.Section]:  # fmt: skip
    """The report's sections: the pictures exactly as the view draws and exports them (the
    overlay is the "Map as PNG" download, byte for byte), the probabilities, and the grid,
    contrast and compared models, each on the scale the view uses."""
    names = info.class_names
    sections = [
        _report_main(view, info, image, described, ex, model),
        _report_contrast(view, names, image, ex),
        _report_grid(view, names, image, ex),
    ]
    if ex.compare:
        sections.append(_report_compare(view, image, ex, model, compared))
    return sections
