"""Photos (ImageNet): Explore on the ImageNet workspace, which has no images of its own.

A link to this page (the navigation's "Photos (ImageNet)", or an old bookmark) opens Explore
with that workspace chosen: the user's photo, resized and centre-cropped as torchvision's
weights' own transforms do, and one of its classifiers (`sources.photo_models`), explained
with every method, class and colour control Explore has."""

from __future__ import annotations

from dashboard import sources, state


def render_view() -> None:
    state.open_dataset(sources.PHOTOS, "page_files/explore.py")
