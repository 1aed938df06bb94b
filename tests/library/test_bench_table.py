"""The bench split in two (issue 33): `score` gives per-image values, `summarise` the table;
scoring a set in pieces with each image's index equals one call; a stored table reads back as
the same `Bench`, and a damaged or oversized one is refused in plain words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pretrained
from saliency import bench as B

METRICS = ("sparseness", "road_morf", "max_sensitivity", "random_logit")
KW = {
    "methods": ("gradient", "input_x_gradient"),
    "metrics": METRICS,
    "metric_options": {"road_morf": {"percentages": [20, 60], "noise": 0.3},
                       "max_sensitivity": {"samples": 2}},
    "seed": 4,
}  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = pretrained.load_dataset("mnist", "test").images[:6]
    return model, x


def test_bench_is_summarise_of_score(setup):
    model, x = setup
    b = B.bench(model, x, n_boot=50, **KW)
    values = B.score(model, x, **KW)
    s = B.summarise(values, methods=KW["methods"], metrics=METRICS, n_boot=50, seed=4)
    assert s.scores == b.scores and s.losses == b.losses and s.ranks == b.ranks
    assert s.controls == ("random", "edge", "blurred")
    for key, v in b.values.items():
        assert np.array_equal(v, values[key], equal_nan=True)


def test_pieces_with_their_indices_equal_one_call(setup):
    """Image i draws from seed + its index in the set, not its place in the batch. The model's
    float32 gradients move by ~1e-8 with the batch's size, so the methods' cells agree to 1e-6;
    the controls' (no gradients) are exact, as is ROAD's accuracy under its seeded noise."""
    model, x = setup
    idx = [10, 11, 12, 13, 14, 15]
    whole = B.score(model, x, indices=idx, **KW)
    parts = [B.score(model, x[a:b], indices=idx[a:b], **KW) for a, b in ((0, 2), (2, 3), (3, 6))]
    for key, v in whole.items():
        joined = np.concatenate([p[key] for p in parts])
        np.testing.assert_allclose(joined, v, rtol=1e-6, atol=1e-7)
        if key[0] in ("random", "edge") or key[1] == "road_morf":
            assert np.array_equal(joined, v), key
    # The random control and ROAD's noise follow the index: the default seeds differ.
    plain = B.score(model, x, **KW)
    assert not np.array_equal(plain["random", "sparseness"], whole["random", "sparseness"])
    shifted = B.score(model, x, **(KW | {"seed": KW["seed"] + 10}))
    assert np.array_equal(shifted["random", "sparseness"], whole["random", "sparseness"])


def test_a_stored_table_reads_back_as_the_same_bench(setup, tmp_path):
    model, x = setup
    b = B.bench(model, x, n_boot=77, level=0.9, **KW)
    path = B.save_table(
        b, tmp_path / "t.npz", {"model": "mnist-cnn", "n": 6}, indices=range(6),
        labels=[7, 2, 1, 0, 4, 1], targets=[7, 2, 1, 0, 4, 1],
    )  # fmt: skip
    back, meta = B.load_table(path)
    assert back.scores == b.scores and back.losses == b.losses and back.ranks == b.ranks
    assert (back.n_boot, back.level, back.seed) == (77, 0.9, 4)
    np.testing.assert_array_equal(back.agreement, b.agreement)
    assert meta["model"] == "mnist-cnn" and meta["labels"].tolist() == [7, 2, 1, 0, 4, 1]
    assert meta["indices"].dtype == np.int64
    # Per-image values alone: summarised with the defaults.
    B.save_table(b.values, tmp_path / "v.npz")
    v, meta = B.load_table(tmp_path / "v.npz")
    assert v.methods == KW["methods"] and v.controls == b.controls and meta == {}
    assert [s.mean for s in v.scores] == [s.mean for s in b.scores]


def test_bad_tables_are_refused_plainly(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a readable bench table"):
        B.load_table(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="holds no bench table"):
        B.load_table(tmp_path / "other.npz")
    big = np.lib.format.open_memmap(tmp_path / "values.npy", "w+", np.float64, (11, 9, 200_000))
    del big
    import zipfile

    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        z.write(tmp_path / "values.npy", "values.npy")
        z.writestr("metrics.npy", b"")
    with pytest.raises(ValueError, match="at most 10,000,000 values"):
        B.load_table(tmp_path / "big.npz")
    with pytest.raises(ValueError, match="values lack"):
        B.summarise({("gradient", "sparseness"): np.zeros(3)}, methods=("gradient",),
                    metrics=("sparseness", "complexity"))  # fmt: skip
    with pytest.raises(ValueError, match="one int per image"):
        B.random_map(torch.zeros(2, 1, 4, 4), seed=[1, 2, 3])
