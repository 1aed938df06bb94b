"""The default page's stored answers (dashboard/first_answers.py), and the imports that let a
first page be drawn without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import pretrained
import saliency
from dashboard import first_answers
from sandbox import jobs

REPO = Path(__file__).resolve().parents[2]


def test_every_stored_answer_is_what_the_model_computes_now():
    stored = first_answers.questions()
    assert {q["job"] for q in stored} == {"probabilities", "class_maps"}, stored
    for q in stored:
        info = pretrained.model_info(q["name"])
        assert q["weights_sha256"] == info.weights_sha256, (
            f"{q['name']} was retrained: write the answers again with "
            "python tools/record_first_answers.py"
        )
        assert q["key"] == first_answers.key(
            q["name"], info.weights_sha256, q["job"], q["x"], q["kwargs"]
        )
        live = jobs.run(q["job"], pretrained.load_model(q["name"], "cpu"), q["x"], **q["kwargs"])
        assert live.shape == q["answer"].shape and live.dtype == q["answer"].dtype
        np.testing.assert_allclose(q["answer"], live, rtol=1e-5, atol=1e-6)
        got = first_answers.get(q["name"], info.weights_sha256, q["job"], q["x"], q["kwargs"])
        np.testing.assert_array_equal(got, q["answer"])


def test_the_stored_maps_are_the_jacobian_of_the_default_image():
    """Independently of the jobs: test image #0's stored maps are saliency.jacobian's rows."""
    (maps,) = [q for q in first_answers.questions() if q["job"] == "class_maps"]
    x, _ = pretrained.load_dataset("mnist", "test")[:1]
    np.testing.assert_array_equal(maps["x"], x.numpy())
    assert maps["kwargs"] == {"method": "gradient", "score": "logit", "absolute": False}
    jac = saliency.jacobian(pretrained.load_model("mnist-cnn", "cpu"), x)  # (1, 10, 1, 28, 28)
    np.testing.assert_allclose(maps["answer"], jac.numpy(), rtol=1e-5, atol=1e-6)


def test_a_question_that_differs_in_anything_is_not_answered():
    (q,) = [q for q in first_answers.questions() if q["job"] == "probabilities"]
    name, sha, job, x, kwargs = q["name"], q["weights_sha256"], q["job"], q["x"], q["kwargs"]
    assert first_answers.get(name, sha, job, x, kwargs) is not None
    other = x.copy()
    other[0, 0, 14, 14] += 1e-3  # one pixel
    for changed in [
        ("mnist-mlp", sha, job, x, kwargs),  # another model
        (name, "0" * 64, job, x, kwargs),  # retrained weights
        (name, sha, "class_maps", x, kwargs),
        (name, sha, job, other, kwargs),
        (name, sha, job, x.reshape(1, 28, 28, 1), kwargs),  # same bytes, another shape
        (name, sha, job, x, {"score": "logit"}),
    ]:
        assert first_answers.get(*changed) is None, changed[:3]
    a = first_answers.get(name, sha, job, x, kwargs)
    a[:] = -1  # a copy: the stored answer is not spoilt
    assert (first_answers.get(name, sha, job, x, kwargs) >= 0).all()


def test_a_missing_or_damaged_file_answers_nothing(tmp_path: Path):
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(first_answers.PATH.read_bytes()[:5000])
    huge = tmp_path / "huge.npz"
    huge.write_bytes(b"\0" * (first_answers.MAX_BYTES + 1))
    for path in (tmp_path / "missing.npz", damaged, huge):
        assert first_answers._stored(path) == ({}, frozenset())


def test_the_libraries_import_without_torch_and_load_it_on_first_use():
    code = (
        "import sys\n"
        "import pretrained, saliency, saliency.display, workspace, sandbox.worker\n"
        "before = 'torch' in sys.modules\n"
        "names = pretrained.list_models('mnist'), pretrained.model_info('mnist-cnn')\n"
        "x, y = pretrained.data.load_arrays('mnist')\n"
        "still = 'torch' in sys.modules\n"
        "jac = saliency.jacobian\n"
        "print(before, still, 'torch' in sys.modules, jac is saliency._gradients.jacobian)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.split() == ["False", "False", "True", "True"], done.stderr[-2000:]


@pytest.mark.parametrize("package", [saliency, pretrained])
def test_every_public_name_resolves(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        package.nonexistent  # noqa: B018


def test_load_arrays_is_load_dataset_without_torch():
    x, y = pretrained.data.load_arrays("fashion-mnist", "test")
    ds = pretrained.load_dataset("fashion-mnist", "test")
    np.testing.assert_array_equal(x, ds.images.numpy())
    np.testing.assert_array_equal(y, ds.labels.numpy())
    assert x.dtype == np.float32 and x.shape == (10000, 1, 28, 28) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0


def test_the_default_page_is_drawn_without_torch():
    """A fresh process draws the default page (AppTest: the same script a first visitor's
    browser runs) and never imports torch: every answer it needs is stored. Fails when the
    default view asks something new, or when something it imports pulls torch in."""
    code = (
        "import json, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file('dashboard/app.py', default_timeout=60)\n"
        "at.run()\n"
        "print(json.dumps({'torch': 'torch' in sys.modules,\n"
        "    'errors': [e.message for e in at.exception],\n"
        "    'heading': [s.value for s in at.subheader][:1],\n"
        "    'captions': [c.value for c in at.caption]}))\n"
    )
    env = {
        **os.environ,
        "SALIENCY_PANEL_WAIT_S": "0",
        "SALIENCY_CACHE_DIR": tempfile.mkdtemp(prefix="saliency-cache-"),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["errors"] == []
    assert seen["heading"] == ["mnist-cnn says **7** (100.0%) · true class 7 ✓ right"]
    assert not seen["torch"], (
        "the default page imported torch: if it asks its model something new, write the "
        "answers again with python tools/record_first_answers.py"
    )


def test_the_workers_fork_server_imports_every_module_a_job_may_need():
    """A locked-down worker can't open a file: what the two packages import on first use must
    be imported by the fork server, before the lockdown."""
    code = (
        "import sys, sandbox._forkserver, saliency, pretrained\n"
        "need = [f'saliency.{m}' for m in saliency._FROM]\n"
        "need += [f'pretrained.{m}' for m in pretrained._FROM]\n"
        "print([m for m in need if m not in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
