from tests.fixtures.zpool import zpool  # noqa: F401
