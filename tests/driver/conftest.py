from tests.fixtures.plugin import plugin
from tests.fixtures.zpool import zpool

__all__ = ["plugin", "zpool"]
