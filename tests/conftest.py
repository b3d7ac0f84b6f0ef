import os

# Two virtual CPU devices so that sharded code paths run in tests.
# Must be set before jax is imported.
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
