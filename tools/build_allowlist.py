"""Build the gate's operator allowlist, `sandbox/allowlist.json`, from a corpus of real models.

The gate (`sandbox.gate`) lets a program run only if every operator it calls is known to be
pure. Which operators an honest classifier calls depends on how it was saved: `torch.jit.trace`
records low-level calls (`aten::_convolution`, `aten::Int`, ...), `torch.jit.script` keeps
Python-level ones (`aten::conv2d`, list and string operators), and `torch.export` writes ATen
overloads (`aten::_native_batch_norm_legit_no_training`). So the list is measured, not guessed:

- the corpus is every classification model torchvision ships
  (`torchvision.models.list_models(module=torchvision.models)`), the registry's own
  architectures, and, when timm is installed, a model of each of timm's common families;
  all with random weights (nothing is downloaded);
- each is made three ways (traced, scripted, exported with a dynamic batch), saved, loaded
  back, and its operators listed by the gate's own code (`gate.program_ops`), so the list holds
  exactly the names the gate will see in an uploaded file;
- the smallest model of each family (`ONNX_SAMPLE`) is also exported to ONNX (opset
  `onnx_models.TARGET_OPSET`, a dynamic batch), converted by onnx2torch and its operators listed
  as the worker lists an ONNX upload's (`onnx_models.read_onnx`, which records what the
  converted module calls at torch's dispatcher);
- an operator the gate denies outright (`gate.denied`: file, process, network, custom-class,
  attribute-growing operators and the like) is never added: the form that needs it stays
  refused and is reported.

Keeping it current. A new torch can rename or add operators that the same models now call, so
after upgrading torch or torchvision (the pins in requirements.txt), run

    python tools/build_allowlist.py       # the whole corpus; --only resnet18,vgg11 for a part

then read `git diff sandbox/allowlist.json`: every added operator must be a pure tensor
computation (look it up in native_functions.yaml when in doubt), and commit it with the pins.
tests/sandbox/test_gate_corpus.py fails when the installed torch is not the one the list was built
with, and checks a sample of the corpus against the committed list in all three forms.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # hostile.saved: a model saved as a user would

import hostile  # noqa: E402

from sandbox import gate  # noqa: E402

OUT = ROOT / "sandbox" / "allowlist.json"
FORMS = ("trace", "script", "export", "onnx")

# The smallest input each family takes and behaves as it would at its usual size: the CNNs pool
# adaptively, so 64 × 64 follows the same code; the transformers' windows, patches and position
# embeddings are built for 224 (or 299), where their traced code takes its usual branches.
SIZE_BY_PREFIX = {"vit_": 224, "swin_": 224, "maxvit_": 224, "inception_": 299}
DEFAULT_SIZE = 64

# timm's common families, one small member each (pretrained=False): built only when timm is
# installed (it is optional).
TIMM = {
    "vit_tiny_patch16_224": 224,
    "deit_tiny_patch16_224": 224,
    "deit_tiny_distilled_patch16_224": 224,
    "swin_tiny_patch4_window7_224": 224,
    "convnext_atto": 64,
    "efficientnet_b0": 64,
    "regnety_002": 64,
    "resnet18d": 64,
    "mobilenetv3_small_100": 64,
    "levit_128s": 224,
}


def size_of(name: str) -> int:
    return next((s for p, s in SIZE_BY_PREFIX.items() if name.startswith(p)), DEFAULT_SIZE)


_INITS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
          "xavier_uniform_", "xavier_normal_", "orthogonal_")  # fmt: skip


def build(source: str, name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The model, in eval mode, and its example input's shape. Its weights are whatever memory
    held: an operator list does not depend on them, and drawing hundreds of millions of random
    numbers is most of the time a large model takes to build."""
    saved = {f: getattr(torch.nn.init, f) for f in _INITS}
    try:
        for f in _INITS:
            setattr(torch.nn.init, f, lambda tensor, *args, **kwargs: tensor)
        return _build(source, name)
    finally:
        for f, fn in saved.items():
            setattr(torch.nn.init, f, fn)


def _build(source: str, name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    if source == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
        return model.eval(), (3, size_of(name), size_of(name))
    if source == "registry":
        import pretrained

        return pretrained.build_model(name, 10).eval(), (1, 28, 28)
    import timm

    return timm.create_model(name, pretrained=False).eval(), (3, TIMM[name], TIMM[name])


def onnx_saved(model: torch.nn.Module, x: torch.Tensor) -> bytes:
    """`model` exported to ONNX as a user would with torch's own exporter (no onnxscript)."""
    from sandbox import onnx_models

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), buf, dynamo=False, opset_version=onnx_models.TARGET_OPSET,
            input_names=["x"], output_names=["scores"],
            dynamic_axes={"x": {0: "batch"}, "scores": {0: "batch"}},
        )  # fmt: skip
    return buf.getvalue()


def loaded_ops(data: bytes, form: str) -> set[str]:
    """The operators the gate lists in the file, read back as the worker reads it."""
    if form == "onnx":
        from sandbox import onnx_models

        with gate.max_model_bytes(len(data)), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnx_models.read_onnx(data, check=False)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if form == "export":
            program = torch.export.load(io.BytesIO(data))
        else:
            program = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return gate.program_ops(program)


def _family_first(name: str) -> tuple[int, int, str]:
    """The smallest model of each family first: an interrupted run has seen every family."""
    family = name.split("_")[0].rstrip("0123456789")
    order = (0 if name in _FIRST else 1, 1 if name in _LAST else 0)
    return (*order, family + name)


_FIRST = {"alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s",
          "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2",
          "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18", "resnext50_32x4d",
          "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "swin_v2_t", "vgg11", "vgg11_bn",
          "vit_b_32", "wide_resnet50_2"}  # fmt: skip
_LAST = {"vit_h_14", "regnet_y_128gf", "vit_l_16", "convnext_large", "regnet_y_32gf"}
ONNX_SAMPLE = _FIRST  # torchvision's made as ONNX too (the registry's and timm's all are)


def corpus(only: set[str] | None, with_timm: bool) -> list[tuple[str, str]]:
    import torchvision

    import pretrained

    names = torchvision.models.list_models(module=torchvision.models)
    models = [("registry", n) for n in pretrained.ARCHITECTURES]
    models += [("torchvision", n) for n in sorted(names, key=_family_first)]
    if with_timm:
        models += [("timm", n) for n in TIMM]
    return [m for m in models if only is None or m[1] in only]


def forms_of(source: str, name: str) -> tuple[str, ...]:
    """The forms a model is made in: ONNX only for `ONNX_SAMPLE` (an export is slow, and the
    operators are onnx2torch's per ONNX operator, which one model of a family covers)."""
    return FORMS if source != "torchvision" or name in ONNX_SAMPLE else FORMS[:3]


def measure(source: str, name: str, forms: tuple[str, ...] = FORMS) -> dict:
    """Each form's operators (or why it could not be made), and the seconds each took."""
    entry: dict = {}
    torch.manual_seed(0)
    try:
        model, shape = build(source, name)
    except Exception as err:  # noqa: BLE001 - recorded: a model that can't be built
        return {form: {"error": f"build: {type(err).__name__}: {err}"[:300]} for form in forms}
    for form in forms:
        start = time.process_time()
        try:
            x = torch.rand(2, *shape)
            data = onnx_saved(model, x) if form == "onnx" else hostile.saved(model, x, form)
            ops = loaded_ops(data, form)
            entry[form] = {"ops": sorted(ops), "mb": round(len(data) / 2**20, 1)}
        except Exception as err:  # noqa: BLE001 - recorded: a form this model can't be made in
            line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            entry[form] = {"error": f"{type(err).__name__}: {line}"[:300]}
            if "--verbose" in sys.argv:
                traceback.print_exc()
        entry[form]["cpu_s"] = round(time.process_time() - start, 1)
        data = None
        gc.collect()
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated model names (a part of the corpus)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/allowlist-corpus.json"),
                   help="per-model results, reused on a rerun with the same torch")  # fmt: skip
    p.add_argument("--no-timm", action="store_true", help="leave timm out even when installed")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    import torchvision

    try:
        import timm

        timm_version = None if args.no_timm else timm.__version__
    except ImportError:
        timm_version = None
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    versions["timm"] = timm_version
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cache = {}
    if args.cache.is_file():
        cache = json.loads(args.cache.read_text())
        same = ("torch", "torchvision")
        if any(cache.get("versions", {}).get(k) != versions[k] for k in same):
            cache = {}
        elif cache.get("versions", {}).get("timm") != versions["timm"]:
            cache["results"] = {k: v for k, v in cache["results"].items() if k[:5] != "timm:"}
    results = cache.setdefault("results", {})
    cache["versions"] = versions
    only = set(args.only.split(",")) if args.only else None
    models = corpus(only, timm_version is not None)
    for i, (source, name) in enumerate(models):
        key = f"{source}:{name}"
        missing = [f for f in forms_of(source, name) if f not in results.get(key, {})]
        if missing:  # a form added since the cache was written is measured on its own
            start = time.monotonic()
            results.setdefault(key, {}).update(measure(source, name, tuple(missing)))
            args.cache.write_text(json.dumps(cache))
            took = time.monotonic() - start
            forms = " ".join(f"{f}:{'ok' if 'ops' in results[key][f] else 'FAIL'}" for f in missing)
            print(f"[{i + 1}/{len(models)}] {key} {took:.0f}s {forms}", flush=True)
    keys = [f"{s}:{n}" for s, n in models]
    allowed, refused = set(), {}
    for key in keys:
        for form in FORMS:
            for op in results[key].get(form, {}).get("ops", []):
                why = gate.denied(op)
                if why:
                    refused.setdefault(op, []).append(f"{key} ({form})")
                else:
                    allowed.add(gate.base_name(op))
    for op, where in sorted(refused.items()):
        print(f"denied, not added: {op} ({gate.denied(op)}), used by {', '.join(where[:5])}")
    done = [(k, results[k]) for k in keys]
    listing = {
        "about": "Operators of the corpus, made traced, scripted, exported and (a sample) as "
        "ONNX converted by onnx2torch; built by "
        "tools/build_allowlist.py (its docstring says how to keep it current). Read by "
        "sandbox.gate.",
        **versions,
        "corpus": {
            source: [n for s, n in models if s == source]
            for source in ("torchvision", "registry", "timm")
            if any(s == source for s, _ in models)
        },
        "made": {
            form: {
                "made": sum("ops" in results[k].get(form, {}) for k in keys),
                "failed": {k: r[form]["error"] for k, r in done if "error" in r.get(form, {})},
            }
            for form in FORMS
        },
        "operators": sorted(allowed),
    }
    if only is None:
        args.out.write_text(json.dumps(listing, indent=1) + "\n")
        print(f"wrote {args.out}: {len(allowed)} operators from {len(keys)} models")
    else:
        print(f"(a part of the corpus: {args.out} not written) {len(allowed)} operators")
    new = sorted(allowed - gate.ALLOWED_OPS)
    print(f"not yet on the gate's list ({len(new)}): {' '.join(new)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
