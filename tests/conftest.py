"""One persistent XLA compilation cache for the whole test session.

Most slow tests run command lines in subprocesses (a whole run, a killed run, its resume; the
same tiny config in several tests), and each process would compile the same programs again.
The controller makes one cache directory for the session; `cpu_devices.cpu_devices_env` points
every subprocess at it (a cached executable is the same code, so results are unchanged), and it
is removed when the session ends.
"""

import os
import shutil
import tempfile

CACHE_VARIABLE = "JAXRL_SI_TEST_XLA_CACHE"


def pytest_configure(config):
    if not hasattr(config, "workerinput") and CACHE_VARIABLE not in os.environ:  # the controller, before workers start
        os.environ[CACHE_VARIABLE] = tempfile.mkdtemp(prefix="jaxrl_si_xla_cache_")
        config.jaxrl_si_cache = os.environ[CACHE_VARIABLE]


def pytest_unconfigure(config):
    if cache := getattr(config, "jaxrl_si_cache", None):
        shutil.rmtree(cache, ignore_errors=True)
