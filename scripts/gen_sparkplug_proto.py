"""Regenerate agent/sparkplug/sparkplug_b_pb2.py (and its .pyi stub) from the .proto.

Usage: ``.venv/bin/python scripts/gen_sparkplug_proto.py [--check]``

Needs ``grpcio-tools`` (a dev dependency: it bundles ``protoc``). ``--check`` regenerates into
a temporary directory and exits 1 when the committed files differ (the unit test runs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "agent" / "sparkplug"
PROTO = "sparkplug_b.proto"
OUTPUTS = ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi")


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) on the .proto, writing the module and stub to ``out``."""
    from grpc_tools import protoc  # noqa: PLC0415 - a dev dependency, only needed here

    code = protoc.main(
        [
            "protoc",
            f"-I{PACKAGE}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            str(PACKAGE / PROTO),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    if not args.check:
        generate(PACKAGE)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [
            name
            for name in OUTPUTS
            if (Path(tmp) / name).read_bytes() != (PACKAGE / name).read_bytes()
        ]
    if stale:
        print(f"out of date, run scripts/gen_sparkplug_proto.py: {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
