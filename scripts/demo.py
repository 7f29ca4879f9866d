"""Demo driver behind ``scripts/demo``: start the services and keep them up until Ctrl-C.

The forwarding pipeline is not wired in yet; until it is, the demo starts the local services
the agent talks to and prints their addresses.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import reap_stale


def main() -> int:
    reap_stale()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    mosquitto = Mosquitto()
    kafka = KafkaCluster.single()
    try:
        t0 = time.monotonic()
        mosquitto.start()
        print(f"[demo] mosquitto up at {mosquitto.url} in {time.monotonic() - t0:.1f} s")
        kafka.start()
        print(f"[demo] kafka up at {kafka.bootstrap_servers} in {kafka.started_in_s:.1f} s")
        print("[demo] the agent pipeline is not wired in yet; Ctrl-C stops the services.")
        stop.wait()
    finally:
        kafka.close()
        mosquitto.close()
        print("[demo] stopped, data wiped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
