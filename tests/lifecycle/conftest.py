from tests.e2e.conftest import orders_source
from tests.faults.test_crash_recovery import workers

__all__ = ["orders_source", "workers"]
