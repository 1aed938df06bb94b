"""What each uploader takes, in MB, and the sentences that refuse a file over it.

Streamlit refuses a file over an uploader's `max_upload_size` in the browser: the file is never
sent, the box only marks it red, and the widget still holds whatever it held before. So the page
must say the limit before a file is chosen, and when a form is sent without the file. The
server-wide `server.maxUploadSize` (config.toml, `python -m dashboard`) is the largest of these;
a client that skips the browser's check is refused here, from `UploadedFile.size`, before a byte
is read. `fresh` says whether a file in an image uploader is one not read yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping

from workspace import folder_upload

SERVER_MB = 256  # server.maxUploadSize: the largest uploader's limit
# A model file's records are stored, not deflated: the gate's bound on their declared bytes
# (`gate.MAX_MODEL_BYTES`, 250 MB) keeps memory what it computes from the ZIP directory. The
# file itself is a little bigger than its records (the archive's directory, the program).
MODEL_MB = SERVER_MB
IMAGE_MB = 20  # an image or photo; pixels are bounded too (sandbox.images.MAX_PIXELS)
ZIP_MB = min(SERVER_MB, folder_upload.MAX_ZIP_BYTES >> 20)
# workspace.tables.MAX_BYTES >> 20, written out: importing the tables module imports torch,
# which the first page must not (tests/dashboard/test_upload_limits.py holds them equal)
CSV_MB = 16
NAMES_MB = 1  # a file of class names

CLI = "python -m workspace.index"


def _a(what: str) -> str:
    return ("an " if what[0] in "aeiou" else "a ") + what


def not_sent(what: str, mb: int) -> str:
    """Why a form may arrive without the file the user chose."""
    return (
        f"{_a(what)[0].upper()}{_a(what)[1:]} over {mb} MB is not sent (the box marks it in red). "
        f"To index a bigger one, run {CLI} on your own machine, which has no size limit, then "
        "python -m dashboard --workspace W."
    )


def too_big(file, what: str, mb: int) -> str | None:
    """The refusal for `file` (a Streamlit UploadedFile) over `mb` MB, or None."""
    if file is None or file.size <= mb * 2**20:
        return None
    return (
        f"{file.name} is {file.size / 2**20:,.0f} MB; {_a(what)} may be at most {mb} MB here. "
        f"Index a bigger one on your own machine with {CLI}, which has no size limit."
    )


def fresh(file, session: MutableMapping, *, seen: str, error: str, scope=None):
    """`file` if it is not the upload last read under `session[seen]`, else None.

    A page reruns on every click while its uploader still holds the file: decoding it once per
    new file (its SHA-256, with `scope` where a page keeps one image per source) keeps reruns
    cheap and keeps an error shown until another file comes. A new file clears `session[error]`.
    """
    if file is None:
        return None
    digest = hashlib.sha256(file.getvalue()).hexdigest()
    mark = digest if scope is None else (scope, digest)
    if session.get(seen) == mark:
        return None
    session[seen], session[error] = mark, None
    return file
