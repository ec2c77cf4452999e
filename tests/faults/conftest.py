from tests.e2e.conftest import orders_source
from tests.faults.harness import crash_pubsub, workers

__all__ = ["crash_pubsub", "orders_source", "workers"]
