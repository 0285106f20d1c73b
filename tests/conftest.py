"""Test-wide JAX settings: 8 virtual CPU devices (sharding tests), strict dtype promotion."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_dtype_promotion", "strict")



def pytest_addoption(parser):
    parser.addoption("--all", action="store_true",
                     help="also run the tests marked slow (CI does: .ci/run)")


def pytest_collection_modifyitems(config, items):
    """The README's command runs the fast suite; ``--all`` (CI) adds the slow tests."""
    if config.getoption("--all"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]
