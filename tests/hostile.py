"""Hostile model files, one of each kind a hostile student could upload (issue 15).

Each builder returns the bytes of a real file made with torch's own savers, so that a test can
also show the danger is real: run in this process without the gate, the reader reads, the
writer writes and the loops loop. Used by tests/sandbox/test_trust.py and
benchmarks/hostile_uploads.py.
"""

import io
import os
import zipfile

import pytest
import torch
from torch import nn

import sandbox

# Tests that run uploads in the sandboxed worker skip where it can't be built (not Linux, no
# libseccomp), except in CI (SALIENCY_REQUIRE_SANDBOX=1), where that is an error.
needs_sandbox = pytest.mark.skipif(
    sandbox.unavailable() is not None and os.environ.get("SALIENCY_REQUIRE_SANDBOX") != "1",
    reason=f"the sandbox is unavailable here: {sandbox.unavailable()}",
)

# What the writer writes, and how much the reader reads.
PAYLOAD = b"pwned by an uploaded model\n"
READ_BYTES = 16  # Reader.forward reads this many (TorchScript needs the literal)


class _Base(nn.Module):
    """A working MNIST classifier (a linear layer) around the hostile part."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(784, 10)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class Writer(_Base):
    """Writes PAYLOAD into `path` on every forward (through a shared file mapping)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.payload = list(PAYLOAD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.from_file(self.path, shared=True, size=len(self.payload), dtype=torch.uint8)
        f.copy_(torch.tensor(self.payload, dtype=torch.uint8))
        return self.classify(x) + f.float().sum() * 0.0


class Reader(_Base):
    """Its scores depend on the bytes of `path`: the file becomes part of the model."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        secret = torch.from_file(self.path, shared=False, size=16, dtype=torch.uint8)
        return self.classify(x) + secret[:10].float()


class ForeverLoop(_Base):
    """Never returns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.sum() > -1.0):
            x = x + 0.0
        return self.classify(x)


class BatchLoop(_Base):
    """Fast on one image, never returns on a batch: passes a one-image check."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            while bool(x.sum() > -1.0):
                x = x + 0.0
        return self.classify(x)


class Trap(_Base):
    """A fine classifier that loops forever on an almost white image: accepted, hangs later."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.mean() > 0.9):
            x = x + 0.0
        return self.classify(x)


class Hoarder(_Base):
    """Keeps 256 MB more on every forward, in a list attribute."""

    keep: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.keep = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A new 256 MB tensor each time (a constant torch.ones would be one shared tensor).
        self.keep.append(torch.full((64 * 1024 * 1024,), float(x.sum())))
        return self.classify(x)


def scripted(model: nn.Module) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def saved(model: nn.Module, x: torch.Tensor, form: str) -> bytes:
    """`model` saved the way a user would, as the file's bytes: "trace" (`torch.jit.trace` on
    `x`), "script", or "export" (`torch.export` with a dynamic batch). Used by the gate's corpus
    test, tools/build_allowlist.py and benchmarks/bench_gate.py."""
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if form == "trace":
            torch.jit.save(torch.jit.trace(model, x, check_trace=False), buf)
        elif form == "script":
            torch.jit.save(torch.jit.script(model), buf)
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
            torch.export.save(ep, buf)
    return buf.getvalue()


def writer(path: str) -> bytes:
    return scripted(Writer(str(path)))


def reader(path: str) -> bytes:
    return scripted(Reader(str(path)))


def forever_loop() -> bytes:
    return scripted(ForeverLoop())


def batch_loop() -> bytes:
    return scripted(BatchLoop())


def trap() -> bytes:
    return scripted(Trap())


def hoarder() -> bytes:
    return scripted(Hoarder())


def deflate_bomb(inflated_mb: int = 1024) -> bytes:
    """A torch.save state dict for the registry's "linear" architecture whose weight record is
    a DEFLATE stream of `inflated_mb` MB of zeros (about 1/1000 of that on disk)."""
    from pretrained.architectures import build_model

    state = build_model("linear", 10).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if item.filename.endswith("/data/0"):
                zeros = bytes(2**20)
                info = zipfile.ZipInfo(item.filename)
                info.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(info, "w", force_zip64=True) as f:
                    for _ in range(inflated_mb):
                        f.write(zeros)
            else:
                dst.writestr(item, src.read(item.filename))
    return out.getvalue()


def deflate_ratio(data: bytes) -> float:
    """Inflated size / file size, from the archive's own directory."""
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    return sum(i.file_size for i in infos) / len(data)


def _read_before_forward(module: nn.Module, inputs: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
    secret = torch.from_file(module.path, shared=False, size=16, dtype=torch.uint8)
    return (inputs[0] + secret[0].float(),)


class HookReader(_Base):
    """Its forward is honest; a forward pre-hook, which TorchScript keeps and runs around every
    call of the module from C++, outside its methods, reads `path` into the input."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.register_forward_pre_hook(_read_before_forward)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)


class NestedHoarder(_Base):
    """Keeps every input, in a list held inside a list attribute: `self.holder[0].append`."""

    holder: list[list[torch.Tensor]]

    def __init__(self) -> None:
        super().__init__()
        self.holder = [[]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.holder[0].append(x.clone())
        return self.classify(x)


def hook_reader(path: str) -> bytes:
    return scripted(HookReader(str(path)))


def nested_hoarder() -> bytes:
    return scripted(NestedHoarder())
