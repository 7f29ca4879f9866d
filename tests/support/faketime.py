"""Run a child process with its wall clock shifted, through Debian's libfaketime (LD_PRELOAD).

Only the wall clock moves (``time.time()``, ``datetime.now()``); monotonic clocks stay real
(``FAKETIME_DONT_FAKE_MONOTONIC=1``), as on a gateway whose RTC is wrong while its uptime is
not. ``scripts/setup`` installs the ``faketime``/``libfaketime`` packages.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

LIBRARY_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"


def libfaketime() -> Path:
    """Path of libfaketime's shared object, or an error naming the package that provides it."""
    found = sorted(glob.glob(LIBRARY_GLOB))  # noqa: PTH207 - a glob over /usr/lib/<triplet>
    if not found:
        raise RuntimeError(
            f"libfaketime is not installed ({LIBRARY_GLOB}); run scripts/setup or "
            "`apt-get install faketime libfaketime`."
        )
    return Path(found[0])


def faketime_env(offset: str) -> dict[str, str]:
    """Environment for a child whose wall clock is ``offset`` away, e.g. ``"+2h"`` or ``"-90m"``.

    Merge it over the child's environment; an existing ``LD_PRELOAD`` is kept after it.
    """
    preload = [str(libfaketime())]
    if os.environ.get("LD_PRELOAD"):
        preload.append(os.environ["LD_PRELOAD"])
    return {
        "LD_PRELOAD": " ".join(preload),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


_PROBE = """
import json, time
print(json.dumps({"time_ns": time.time_ns(), "monotonic_ns": time.monotonic_ns()}))
"""


def clocks_of_child(env: dict[str, str]) -> tuple[int, int]:
    """``(time.time_ns(), time.monotonic_ns())`` as read by a Python child with ``env`` merged."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    values = json.loads(out.stdout.strip().splitlines()[-1])
    return int(values["time_ns"]), int(values["monotonic_ns"])
