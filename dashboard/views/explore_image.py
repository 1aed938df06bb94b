"""Explore's image chooser: a test image found by class, correctness, index or path, an
upload, or a drawn digit. Split from `dashboard.views.explore`, which re-exports every name
(issue 31)."""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from dashboard import cache, render, state, upload_limits
from dashboard.render import class_label
from dashboard.views.explore_controls import NEXT_LABEL, PREVIOUS_LABEL
from sandbox.images import (
    ImageError,
    canvas_to_mnist,
    decode_image,
    decode_image28,
    encode_image,
    mnist_style,
)
from workspace.opened import Workspace

# Session keys of this page.
OPEN_PATH = "open_path"
OPEN_PATH_ERROR = "open_path_error"
PREVIOUS = "previous"
NEXT = "next"
# The containers of Previous and Next: hidden (panel.css) while the panel draws its own.
PREVIOUS_BOX = "explore_previous"
NEXT_BOX = "explore_next"
RANDOM = "random"
OPEN_PATH_SOURCE = "open_path_source"
WS_UPLOADS = "ws_uploads"
WS_UPLOAD_FILE = "ws_upload_file"
WS_UPLOAD_ERROR = "ws_upload_error"
WS_UPLOAD_SEEN = "ws_upload_seen"
UPLOAD_FILE = "upload_file"
UPLOAD_SEEN = "upload_seen"
UPLOAD_ERROR = "upload_error"
UPLOAD_PREVIEW = "upload_preview"
UPLOAD_NOTE = "upload_note"
CANVAS = "canvas"
CANVAS_SEEN = "canvas_seen"
# The image came from a workspace without images (an upload, perforce): back on one with images,
# the chooser opens on them again.
NO_IMAGES_SHOWN = "no_images_shown"


def _candidates(view: dict, src: Workspace) -> np.ndarray:
    """Indices of the images matching the true-class and correct/wrong filters."""
    keep = np.ones(len(src), dtype=bool)
    if view["true_class"] != "any":
        keep &= src.labels == int(view["true_class"])
    if view["correctness"] != "all":
        pred = cache.predictions(view["model"], src.key).predicted
        right = pred == src.labels
        keep &= right if view["correctness"] == "correct" else ~right
    return np.flatnonzero(keep)


def _neighbour(candidates: np.ndarray, i: int, direction: int) -> int | None:
    """The candidate after image `i` (direction 1) or before it (-1), wrapping around."""
    if len(candidates) == 0:
        return None
    if direction > 0:
        after = candidates[candidates > i]
        return int(after[0] if len(after) else candidates[0])
    before = candidates[candidates < i]
    return int(before[-1] if len(before) else candidates[-1])


def _step(candidates: np.ndarray, direction: int) -> None:
    if len(candidates) == 0:
        return
    if direction == 0:
        state.put(state.INDEX, int(np.random.default_rng().choice(candidates)))
    else:
        state.put(state.INDEX, _neighbour(candidates, state.get(state.INDEX), direction))


def _described(src: Workspace, index: int) -> str:
    return f"test image #{index}" if src.paths is None else f"#{index} {src.paths[index]}"


def _open_path(src: Workspace) -> None:
    """The path typed into "Open by path": that image, or a message saying it isn't here."""
    text = st.session_state.get(OPEN_PATH, "").strip()
    if not text:
        return
    i = src.find(text)
    if i is None:
        st.session_state[OPEN_PATH_ERROR] = f"No image {text!r} in this workspace."
        return
    st.session_state[OPEN_PATH_ERROR] = None
    state.put(state.INDEX, i)
    state.put(state.TRUE_CLASS, "any")
    state.put(state.CORRECTNESS, "all")


def _test_image(view: dict, src: Workspace) -> tuple[np.ndarray | None, int | None, str]:
    names = src.classes
    if view["true_class"] != "any" and int(view["true_class"]) >= len(names):
        state.put(state.TRUE_CLASS, "any")  # a class number from another data set's link
    if int(state.get(state.INDEX)) >= len(src):  # a link or another data set's index
        st.info(f"There is no image #{state.get(state.INDEX)} in {len(src):,} images: #0 is shown.")
        state.put(state.INDEX, 0)
    c1, c2 = st.columns(2)
    c1.selectbox(
        "True class",
        ("any",) + tuple(str(k) for k in range(len(names))),
        key=state.TRUE_CLASS,
        format_func=lambda v: "any class" if v == "any" else class_label(int(v), names),
        help="Type to search the class names.",
    )
    c2.radio(
        f"{render.plain(cache.display_name(view['model']))} got it",
        state.CORRECTNESS_CHOICES,
        key=state.CORRECTNESS,
        horizontal=True,
        format_func={"all": "either", "correct": "right", "wrong": "wrong"}.get,
    )
    candidates = _candidates(view, src)
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    c1.number_input("Image index", 0, len(src) - 1, step=1, key=state.INDEX)
    c2.container(key=PREVIOUS_BOX).button(
        PREVIOUS_LABEL, key=PREVIOUS, on_click=_step, args=(candidates, -1)
    )
    c3.container(key=NEXT_BOX).button(NEXT_LABEL, key=NEXT, on_click=_step, args=(candidates, 1))
    c4.button("🎲 Random", key=RANDOM, on_click=_step, args=(candidates, 0))
    if src.paths is not None:
        if st.session_state.get(OPEN_PATH_SOURCE) != src.key:  # another data set's path
            st.session_state[OPEN_PATH_SOURCE] = src.key
            st.session_state.pop(OPEN_PATH, None)
            st.session_state.pop(OPEN_PATH_ERROR, None)
        st.text_input(
            "Open by path",
            key=OPEN_PATH,
            on_change=_open_path,
            args=(src,),
            placeholder=src.paths[0],
            help="The image's path under the data folder, as in predictions.csv.",
        )
        if st.session_state.get(OPEN_PATH_ERROR):
            st.error(render.plain(st.session_state[OPEN_PATH_ERROR]))
    index = int(st.session_state[state.INDEX])
    kind = "test images" if src.paths is None else "images"
    note = f"{len(candidates):,} of {len(src):,} {kind} match the filters."
    if len(candidates) and not np.isin(index, candidates):
        note += f" Image #{index} does not: use Next or Random."
    st.caption(note)
    try:
        image = src.image(index)
    except ImageError as err:
        st.error(
            f"{render.plain(src.name(index))} can't be read now: {render.plain(err)}. Pick "
            "another image; the rest of the workspace is fine."
        )
        return None, None, ""
    return image, int(src.labels[index]), _described(src, index)


def _remember_image(image: np.ndarray) -> None:
    state.put(state.IMAGE, encode_image(image))


def _workspace_upload(src: Workspace) -> np.ndarray | None:
    """An image of the user's, prepared as the workspace's images are (kept in this session,
    not in the link: a 224 × 224 RGB image is too big for a URL)."""
    kept = st.session_state.setdefault(WS_UPLOADS, {})
    if not cache.uploads_allowed():
        st.info("Uploading images is turned off on this server: pick one from the data set.")
        return None
    file = st.file_uploader(
        "An image (PNG, JPEG, GIF, BMP, WebP; up to 20 MB), prepared like the workspace's: "
        + src.description,
        key=WS_UPLOAD_FILE,
        max_upload_size=upload_limits.IMAGE_MB,
    )
    if too_big := upload_limits.too_big(file, "image", upload_limits.IMAGE_MB):
        st.session_state[WS_UPLOAD_ERROR], file = too_big, None  # never read
    if file := upload_limits.fresh(
        file, st.session_state, seen=WS_UPLOAD_SEEN, error=WS_UPLOAD_ERROR, scope=src.key
    ):
        try:
            x = src.prepare(decode_image(file.getvalue()))
            if tuple(x.shape) != src.shape:
                raise ImageError(
                    f"it becomes {x.shape[1]} × {x.shape[2]}, but the model takes "
                    f"{src.shape[1]} × {src.shape[2]} (this workspace keeps images at their "
                    "own size)"
                )
        except ImageError as err:
            st.session_state[WS_UPLOAD_ERROR] = f"{file.name}: {err}"
        else:
            kept[src.key] = x
    if st.session_state.get(WS_UPLOAD_ERROR):
        st.error(
            render.plain(st.session_state[WS_UPLOAD_ERROR])
            + " The image shown below is the one you had before."
        )
    return kept.get(src.key)


def _your_image(src: Workspace) -> tuple[np.ndarray | None, int | None, str]:
    image = _workspace_upload(src)
    if image is None:
        st.info("No image yet: upload one above.")
        return None, None, ""
    return image, None, "your upload"


def _uploaded_image() -> None:
    if not cache.uploads_allowed():
        st.info("Uploading images is turned off on this server: draw one instead.")
        return
    file = st.file_uploader(
        "An image of one digit or garment (PNG, JPEG, GIF, BMP, WebP; up to 20 MB)",
        key=UPLOAD_FILE,
        max_upload_size=upload_limits.IMAGE_MB,
    )
    if too_big := upload_limits.too_big(file, "image", upload_limits.IMAGE_MB):
        st.error(render.plain(too_big))  # never read
        return
    if file is None:
        return
    if upload_limits.fresh(file, st.session_state, seen=UPLOAD_SEEN, error=UPLOAD_ERROR):
        try:
            picture = decode_image(file.getvalue())
            image = mnist_style(picture)
        except ImageError as err:
            st.session_state[UPLOAD_ERROR] = f"{file.name}: {err}"
        else:
            preview = picture.convert("RGB")
            preview.thumbnail((280, 280))  # keep only a small copy per session
            st.session_state[UPLOAD_PREVIEW] = np.asarray(preview)
            st.session_state[UPLOAD_NOTE] = picture.info.get("saliency_note")
            _remember_image(image)
    if st.session_state.get(UPLOAD_ERROR):
        st.error(
            render.plain(st.session_state[UPLOAD_ERROR])
            + " The image shown below is the one you had before."
        )
    elif st.session_state.get(UPLOAD_NOTE):
        st.info(st.session_state[UPLOAD_NOTE])
    if st.session_state.get(UPLOAD_PREVIEW) is not None and state.get(state.IMAGE):
        c1, c2, _ = st.columns([2, 2, 3])
        with c1:
            render.show(st.session_state[UPLOAD_PREVIEW], "Your image, as uploaded")
        with c2:
            seen = decode_image28(state.get(state.IMAGE))
            render.show(
                render.grey(seen, 5),
                "What the model sees: greyscale, light background inverted, cropped to the ink, "
                "fitted into 20 × 20 and centred by mass in 28 × 28, like MNIST",
            )


def _drawn_image() -> None:
    from dashboard import canvas  # the browser's PNG is checked before it is decoded

    drawing = canvas.draw(
        width=280,
        height=280,
        key=CANVAS,
        stroke_width=22,
        stroke_color="#FFFFFF",
        background_color="#000000",
        drawing_mode="freedraw",
    )
    st.caption("Draw one digit, large, in the middle. It is converted like MNIST digits were.")
    if drawing.error:
        st.error(render.plain(drawing.error) + " The image you had before is kept.")
        return
    data = drawing.pixels
    if data is None:
        return
    digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    if st.session_state.get(CANVAS_SEEN) == digest:
        return
    st.session_state[CANVAS_SEEN] = digest
    try:
        _remember_image(canvas_to_mnist(np.asarray(data)))
    except ImageError as err:
        st.info(str(err))


def choose_image(view: dict, src: Workspace) -> tuple[np.ndarray | None, int | None, str]:
    """The image to explain `(C, H, W)`, its true class if known, and a short description."""
    if not src.has_images:  # the ImageNet workspace: the user's own photo, nothing else
        if view["source"] != "upload":
            state.put(state.SOURCE, "upload")  # so the link and the exports say so
            st.session_state[NO_IMAGES_SHOWN] = True
        return _your_image(src)
    if st.session_state.pop(NO_IMAGES_SHOWN, False):
        state.put(state.SOURCE, "test")
    bundled = src.paths is None
    if not bundled and view["source"] == "draw":  # drawing makes 28 x 28 digits only
        state.put(state.SOURCE, "test")
    st.radio(
        "Image",
        state.SOURCES if bundled else state.SOURCES[:2],
        key=state.SOURCE,
        horizontal=True,
        format_func={"test": "Test set" if bundled else "Data set", "upload": "Upload",
                     "draw": "Draw"}.get,
    )  # fmt: skip
    if view["source"] == "test":
        return _test_image(view, src)
    if not bundled:
        return _your_image(src)
    if view["source"] == "upload":
        _uploaded_image()
    else:
        _drawn_image()
    if not state.get(state.IMAGE):
        st.info("No image yet: upload one or draw a digit above.")
        return None, None, ""
    try:
        image = decode_image28(state.get(state.IMAGE))
    except ImageError as err:  # a hand-edited link
        st.error(f"The image in the link is damaged: {err}")
        return None, None, ""
    return image[None], None, "your drawing" if view["source"] == "draw" else "your upload"
