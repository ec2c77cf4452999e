from tests.e2e.conftest import orders_source

__all__ = ["orders_source"]
