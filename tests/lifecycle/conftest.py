from tests.e2e.conftest import orders_source
from tests.faults.harness import workers

__all__ = ["orders_source", "workers"]
