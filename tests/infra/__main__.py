"""``python -m tests.infra up [--cluster]``: start the services and keep them up until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import reap_stale


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.infra")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Mosquitto and Kafka, print their addresses, wait")
    up.add_argument("--cluster", action="store_true", help="also start the three-broker cluster")
    sub.add_parser("reap", help="kill services left behind by an interrupted run")
    args = parser.parse_args()
    if args.command == "reap":
        for name in reap_stale():
            print(f"killed {name}")
        return 0

    reap_stale()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    mosquitto = Mosquitto()
    clusters = [KafkaCluster.single()]
    if args.cluster:
        clusters.append(KafkaCluster.three_brokers())
    try:
        t0 = time.monotonic()
        mosquitto.start()
        print(f"mosquitto  {mosquitto.url}  (up in {time.monotonic() - t0:.1f} s)", flush=True)
        for cluster in clusters:
            cluster.start()
            rss = sum(cluster.memory_rss_bytes().values()) / 2**20
            print(f"kafka {cluster.name:13} {cluster.bootstrap_servers}  (up in "
                  f"{cluster.started_in_s:.1f} s, RSS {rss:.0f} MiB)", flush=True)  # fmt: skip
        print("Ctrl-C to stop.", flush=True)
        stop.wait()
    finally:
        for cluster in clusters:
            cluster.close()
        mosquitto.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
