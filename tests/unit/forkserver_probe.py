"""`python -m tests.unit.forkserver_probe CODE`: prints what a forked child must have of its own, as
JSON on stdout, a line on stderr, then exits with CODE (tests/unit/test_forkserver.py)."""

import json
import os
import random
import sys
import threading

if __name__ == "__main__":
    print(json.dumps({
        "pid": os.getpid(), "session": os.getsid(0), "cwd": os.getcwd(), "probe": os.environ.get("PROBE"),
        "argv": sys.argv[1:], "random": random.random(), "threads": threading.active_count(),
        "stdin": sys.stdin.read(), "worker_imported": "worker.app" in sys.modules,
    }))
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
