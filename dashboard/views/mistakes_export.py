"""Misclassifications' download of the maps of every image the gallery's filter selects:
computed on a click (`workspace.export_maps`), held in `held_exports` until downloaded or
replaced. The page's report (`mistakes_report.report_panel`) shares the store and the lock."""

from __future__ import annotations

import functools
import hashlib
import io
import re
import secrets
import threading

import numpy as np
import streamlit as st

import pretrained
from dashboard import budget, cache, lru, render
from dashboard.sources import Predictions, Workspace
from sandbox import worker
from workspace import export_maps

# Session keys of this page.
MIS_EXPORT_TARGET = "mis_export_target"
MIS_EXPORT_PNGS = "mis_export_pngs"
MIS_EXPORT = "mis_export"
MIS_EXPORT_GO = "mis_export_go"
MIS_EXPORT_NPZ = "mis_export_npz"
MIS_EXPORT_ZIP = "mis_export_zip"


EXPORT_IMAGES = 10_000  # maps one export from the page may hold: a bundled test set's size


# --- the gallery's maps, every image its filter selects, as one download --------------------


def model_stem(model_name: str) -> str:
    """A model's shown name as part of a download's file name (letters, digits, ".-_")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", cache.display_name(model_name))[:60]


def export_bytes() -> int:
    """What the exports waiting to be downloaded may hold together, every session's (their
    .npz and .zip): half the maps' share of the budget, 154 MB with the default 1536 MB."""
    return budget.share("maps") // 2


@st.cache_resource(show_spinner=False)
def held_exports() -> lru.BytesLRU:
    """Finished exports by token, until downloaded or replaced: one a session (its next one
    replaces it), the least recently made dropped first when they outgrow `export_bytes`."""
    return lru.BytesLRU(export_bytes())


@st.cache_resource(show_spinner=False)
def _exporting() -> threading.Lock:
    """One export computed at a time on this server: each is a long run of batches."""
    return threading.Lock()


def held_file(token: str, part: str) -> bytes:
    """A held export's file, when the browser asks for it (deferred: the page itself never
    carries the bytes, so a redrawn page doesn't hash or copy them)."""
    files = held_exports().get(token)
    if files is None or files.get(part) is None:
        raise ValueError("this export was dropped to make room for others: compute it again")
    return files[part]


def _cli_filter(kind: str, true: int, predicted: int) -> str | None:
    """The command line's `--filter` for the gallery's, where it has one."""
    return {"cell": f"true={true},pred={predicted}", "all": "wrong", "unsure": "unsure"}.get(kind)


def _cli_source(model_name: str, src: Workspace) -> str | None:
    """What the command line exports from: a server workspace's folder, or a registry model
    on its bundled test set (an upload's file is not on this server's disk)."""
    if src.indexed is not None:
        return str(src.indexed.folder)
    if src.paths is None and model_name in pretrained.list_models():
        return model_name
    return None


def export_panel(
    model_name: str, src: Workspace, preds: Predictions, indices: np.ndarray, what: dict
) -> None:
    """A download of the maps of every image the gallery's filter selects (not only the page
    shown), by `workspace.export_maps`: computed on a click with a progress bar, held in
    `held_exports` until the next export replaces it."""
    n = len(indices)
    with st.expander(f"⬇️ Download the maps of these {n:,} images"):
        if n == 0:
            st.caption("The filter selects no image.")
            return
        c1, c2 = st.columns(2)
        target = c1.radio(
            "Each map explains",
            export_maps.TARGETS,
            key=MIS_EXPORT_TARGET,
            horizontal=True,
            format_func=lambda t: f"the {t} class",
        )
        pngs = c2.checkbox("PNGs too (.zip)", key=MIS_EXPORT_PNGS)
        longest = max((len(src.paths[i]) for i in indices), default=0) if src.paths else 0
        need = export_maps.estimate_bytes(n, src.shape, path_chars=longest, pngs=pngs)
        h, w = src.shape[-2:]
        st.caption(
            f"{n:,} maps of {h} × {w}, |∂ logit / ∂x| of the {target} class (gradient, "
            f"channels reduced as shown here): up to {need / 2**20:,.1f} MB, as float32 in "
            "an .npz with each image's index, labels, prediction and the settings"
            + (", and a PNG of each as drawn here" if pngs else "")
            + "."
        )
        digest = hashlib.blake2b(np.ascontiguousarray(indices, np.int64).data, digest_size=16)
        key = (model_name, src.key, digest.hexdigest(), target, pngs)
        mine = st.session_state.get(MIS_EXPORT)
        if mine and mine["key"] != key:  # another filter or model: that export is not these
            held_exports().pop(mine["token"])
            mine = st.session_state[MIS_EXPORT] = None
        limit = export_bytes()
        if n > EXPORT_IMAGES or need > limit:
            command = _cli_filter(what["kind"], what.get("true", 0), what.get("pred", 0))
            where = _cli_source(model_name, src)
            st.info(
                f"This server exports at most {EXPORT_IMAGES:,} images and "
                f"{limit / 2**20:,.0f} MB at once: choose a narrower filter"
                + (", or leave out the PNGs" if pngs else "")
                + (
                    f", or run `python -m workspace.export_maps {where} --filter {command} "
                    "--out maps.npz`"
                    if command and where
                    else ""
                )
                + "."
            )
            return
        if st.button("Compute the maps", key=MIS_EXPORT_GO, disabled=bool(mine)):
            mine = _compute_export(model_name, src, preds, indices, what, target, pngs, key)
        if mine and held_exports().get(mine["token"]) is None:
            st.caption("The maps computed earlier were dropped to make room: compute again.")
            st.session_state[MIS_EXPORT] = None
            return
        if mine:
            _downloads(mine, f"maps-{model_stem(model_name)}-{what['kind']}-{n}")


def _downloads(mine: dict, stem: str) -> None:
    """The held maps' buttons: the .npz, and the .zip when PNGs were asked for."""
    for ext, what, mime, key in (
        ("npz", "these maps", "application/octet-stream", MIS_EXPORT_NPZ),
        ("zip", "the PNGs and the .npz", "application/zip", MIS_EXPORT_ZIP),
    ):
        if mine[ext] is not None:
            st.download_button(
                f"Download {what} (.{ext}, {mine[ext] / 2**20:,.1f} MB)",
                data=functools.partial(held_file, mine["token"], ext),
                file_name=f"{stem}.{ext}",
                mime=mime,
                key=key,
                on_click="ignore",
            )


def _compute_export(
    model_name: str, src: Workspace, preds: Predictions, indices: np.ndarray, what: dict,
    target: str, pngs: bool, key: tuple,
) -> dict | None:  # fmt: skip
    if not _exporting().acquire(blocking=False):
        st.warning("Another export is being computed on this server: try again in a moment.")
        return None
    try:
        bar = st.progress(0.0, text=f"Computing {len(indices):,} maps…")
        npz, zipped = io.BytesIO(), io.BytesIO() if pngs else None
        info = cache.model_info(model_name)
        written = export_maps.export(
            functools.partial(cache.run, model_name),
            src.image,
            indices,
            labels=src.labels,
            predicted=preds.predicted,
            p_predicted=preds.p_predicted,
            image_shape=src.shape,
            paths=src.paths,
            meta={
                "model": cache.display_name(model_name),
                "model_key": model_name,
                "weights_sha256": info.weights_sha256,
                "classes": list(src.classes),
                "source": src.title,
                "filter": what,
            },
            npz=npz,
            pngs=zipped,
            target=target,
            max_images=EXPORT_IMAGES,
            max_bytes=export_bytes(),
            progress=lambda done, n: bar.progress(done / n, text=f"{done:,} of {n:,} maps"),
        )
        bar.empty()
    except (export_maps.ExportError, worker.ModelFailure) as err:
        st.error(f"The maps could not be exported: {render.plain(err)}")
        return None
    finally:
        _exporting().release()
    files = {"npz": npz.getvalue(), "zip": None if zipped is None else zipped.getvalue()}
    token = secrets.token_hex(16)
    if not held_exports().put(token, files, written.npz_bytes + (written.zip_bytes or 0)):
        st.error("The maps are larger than this server holds for downloads: narrow the filter.")
        return None
    mine = {"token": token, "key": key, "n": written.n, "npz": written.npz_bytes,
            "zip": written.zip_bytes}  # fmt: skip
    st.session_state[MIS_EXPORT] = mine
    return mine
