"""Where the test suite's time goes: seconds per layer and per file, from the XML report that
every pytest run writes (`artifacts/pytest.xml`, pyproject's addopts).

    python tools/test_times.py                  # the last run's layers and its 20 slowest files
    python tools/test_times.py --files 50 path/to/pytest.xml
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def times(report: Path) -> Counter:
    """Seconds per test file (`tests/<layer>/<file>.py`), setup and teardown included."""
    per_file: Counter = Counter()
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split("::")[0]
        parts = module.split(".")
        # classname is "tests.layer.test_x" or "tests.layer.test_x.TestClass"
        path = "/".join(p for p in parts if not p[:1].isupper()) + ".py"
        per_file[path] += float(case.get("time", 0.0))
    return per_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", default=str(ROOT / "artifacts" / "pytest.xml"))
    parser.add_argument("--files", type=int, default=20, help="how many files to list")
    args = parser.parse_args(argv)
    per_file = times(Path(args.report))
    total = sum(per_file.values())
    per_layer: Counter = Counter()
    for path, seconds in per_file.items():
        per_layer[path.split("/")[1] if path.count("/") > 1 else path] += seconds
    print(f"{total:7.1f} s in {len(per_file)} files")
    for layer, seconds in per_layer.most_common():
        print(f"{seconds:7.1f} s  {100 * seconds / total:4.1f} %  {layer}/")
    print()
    for path, seconds in per_file.most_common(args.files):
        print(f"{seconds:7.1f} s  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
