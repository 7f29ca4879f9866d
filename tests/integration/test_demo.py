"""The README's first command, ``scripts/demo``: it runs the main job end to end and cleans up.

The driver (``python -m scripts.demo``) is run as the README's command runs it after its
set-up: real Mosquitto, Kafka, the agent as a process and simulated sensors.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.wait import wait_until

ROOT = Path(__file__).parents[2]


def _demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.demo", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _normalized(output: str) -> int:
    counts = re.findall(r"normalized=\s*(\d+)", output)
    return int(counts[-1]) if counts else 0


def test_demo_unattended_run_survives_its_outage_and_ends_on_time():
    """--duration-secs ends the demo by itself, with the uplink cut and restored on the way,
    readings in Kafka, and everything it started stopped."""
    demo = _demo("--duration-secs", "16", "--outage-at-secs", "4", "--outage-secs", "5")
    output, _ = demo.communicate(timeout=240)
    assert demo.returncode == 0, output[-3000:]
    assert "cutting the uplink" in output
    assert "restoring the uplink" in output
    assert _normalized(output) > 0, output[-3000:]
    assert output.rstrip().splitlines()[-1].startswith("[demo] stopped; demo data wiped")


def test_demo_sigterm_stops_everything_like_ctrl_c():
    """SIGTERM (a supervisor, `timeout`) runs the same clean-up as Ctrl-C: the agent is drained
    and Mosquitto and Kafka are stopped before the demo exits."""
    demo = _demo()
    lines: list[str] = []
    assert demo.stdout is not None
    stdout = demo.stdout

    def progressed() -> bool:
        line = stdout.readline()
        lines.append(line)
        return line.startswith("[demo] t=") or demo.poll() is not None

    wait_until(progressed, 180, "the demo's first progress line")
    demo.send_signal(signal.SIGTERM)
    rest, _ = demo.communicate(timeout=120)
    output = "".join(lines) + rest
    assert demo.returncode == 0, output[-3000:]
    assert "stopping the agent" in output
    assert output.rstrip().splitlines()[-1].startswith("[demo] stopped; demo data wiped")
