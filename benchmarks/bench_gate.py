"""What the gate costs on a large ordinary model: a resnet50 file, traced, scripted and exported.

    taskset -c 0 python benchmarks/bench_gate.py [--rounds 3] [--model resnet50]

Gating a file is what the server's worker does before the model's forward runs once: check the
archive's directory (`gate.check_archive`), read the program (`torch.jit.load` or
`torch.export.load`, which parses the archive and its 98 MB of stored weights), list its
operators (`gate.program_ops`) and check them (`gate.check_ops`). The export reader's type hints
are cached per class as in the workers (`gate.cache_export_schema_hints`; `--plain-export-reader`
measures torch's reader as it is). The table gives each step's
median CPU seconds in this process (one thread) and the total, per form. The target is under
1 s of CPU for the whole gate.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # saved model files

import hostile  # noqa: E402

from sandbox import gate


def gated(data: bytes, form: str) -> dict[str, float]:
    """Each step's CPU seconds."""
    steps = {}
    cpu = time.process_time()
    gate.check_archive(data)
    steps["archive"] = time.process_time() - cpu
    cpu = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if form == "export":
            program = torch.export.load(io.BytesIO(data))
        else:
            program = torch.jit.load(io.BytesIO(data), map_location="cpu")
    steps["read"] = time.process_time() - cpu
    cpu = time.process_time()
    ops = gate.program_ops(program)
    steps["list"] = time.process_time() - cpu
    cpu = time.process_time()
    try:
        gate.check_ops(ops)
    except gate.UserModelError as err:
        print(f"  refused: {err}")
    steps["check"] = time.process_time() - cpu
    steps["total"] = sum(steps.values())
    return steps


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--plain-export-reader", action="store_true", help="torch's reader as it is")
    args = p.parse_args()
    torch.set_num_threads(1)
    if not args.plain_export_reader:
        gate.cache_export_schema_hints()  # as the workers' fork server does
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    print(f"{args.model}, torch {torch.__version__}: median CPU seconds over {args.rounds} rounds")
    print(f"{'form':8} {'MB':>6} {'archive':>8} {'read':>7} {'list':>7} {'check':>7} {'total':>7}")
    for form in ("trace", "script", "export"):
        data = hostile.saved(model, torch.rand(2, 3, 64, 64), form)
        gated(data, form)  # the first read warms torch's deserialisers up, as the fork server does
        runs = [gated(data, form) for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        cells = " ".join(f"{med[k]:7.3f}" for k in ("archive", "read", "list", "check", "total"))
        print(f"{form:8} {len(data) / 2**20:6.1f} {cells[1:]:>8}")


if __name__ == "__main__":
    main()
