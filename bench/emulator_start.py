"""The Pub/Sub emulator's start-up cost, with and without devstack's JVM options (devstack/pubsub_jvm.py).

`python -m bench.emulator_start [--rounds N]` starts the emulator N times per variant (in turn, so
a busy neighbour weighs on all alike; the class archive is made first if missing), waits for
'Server started', then creates a topic and a subscription and sends 200 messages through (a test's
worth of requests, so the options' effect on the warmed-up server shows as well), and prints per
variant the median of: wall seconds to ready, the JVM's CPU seconds to ready, and the wall and
total CPU seconds once the workload is done.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.emulators import free_port, pubsub_launcher, start_pubsub, stop_process
from devstack.pubsub_jvm import OPTS_ENV, PUBSUB_JVM_OPTS, jvm_options

PROJECT = "etl-bench"
MESSAGES = 200
_TICKS_S = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU of `pid` (the launcher execs java, so this is the JVM)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_S


def _workload(host_port: str) -> None:
    os.environ["PUBSUB_EMULATOR_HOST"] = host_port
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, f"t{time.monotonic_ns()}")
    subscription = subscriber.subscription_path(PROJECT, f"s{time.monotonic_ns()}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    for future in [publisher.publish(topic, b"x" * 100) for _ in range(MESSAGES)]:
        future.result(timeout=30)
    received = 0
    while received < MESSAGES:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=30)
        ids = [m.ack_id for m in response.received_messages]
        if ids:
            subscriber.acknowledge(subscription=subscription, ack_ids=ids)
        received += len(ids)
    subscriber.close()


def one_start(jvm_opts: str) -> tuple[float, float, float, float]:
    """(ready wall s, ready CPU s, workload-done wall s, workload-done CPU s)."""
    launcher = pubsub_launcher()
    if launcher is None:
        raise SystemExit("gcloud's cloud-pubsub-emulator launcher is not installed")
    port = free_port()
    env = {**os.environ, OPTS_ENV: jvm_opts}
    with tempfile.TemporaryDirectory(prefix="etl-bench-pubsub-") as scratch:
        log_path = Path(scratch) / "log"
        with log_path.open("wb") as log:
            started = time.perf_counter()
            process = subprocess.Popen([str(launcher), "--host=127.0.0.1", f"--port={port}"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while "Server started" not in log_path.read_text(errors="replace"):
                if process.poll() is not None:
                    raise SystemExit(f"the emulator exited: {log_path.read_text()}")
                time.sleep(0.02)
            ready = (time.perf_counter() - started, _cpu_s(process.pid))
            _workload(f"127.0.0.1:{port}")
            return (*ready, time.perf_counter() - started, _cpu_s(process.pid))
        finally:
            stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop(OPTS_ENV, None)
    opts, archive = jvm_options(pubsub_launcher())
    if archive:  # this start writes the archive as its JVM exits
        start_pubsub(PROJECT).stop()
        opts, _ = jvm_options(pubsub_launcher())
    variants = {"JVM defaults": "", "C1, serial GC": PUBSUB_JVM_OPTS, "+ class archive": opts}
    samples: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, opts in variants.items():
            samples[name].append(one_start(opts))
    print(f"median of {args.rounds} starts | ready wall s | ready CPU s | +{MESSAGES} msgs wall s | CPU s")
    for name, rows in samples.items():
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        print(f"{name:<18} | " + " | ".join(f"{value:6.2f}" for value in medians))
    print(f"devstack options: {opts}")


if __name__ == "__main__":
    main()
