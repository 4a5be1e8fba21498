"""Worker faults for the tests of nnslicer.parallel, installed in Ray workers by their runtime
environment (``worker_process_setup_hook``), so that no test hook lives in nnslicer itself.

With ``NNSLICER_TEST_FAULT_ONCE=PATH``, the first backward task to create PATH kills its
worker (as a crash would; a retry recovers); with ``NNSLICER_TEST_FAULT_ALWAYS=1``, every task
does (the retries run out).
"""

import os


def _created(path):
    """Whether this call created the file ``path`` (False: it existed)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def install():
    """The workers' setup hook: wrap the backward analysis that nnslicer's tasks call."""
    import nnslicer.parallel as parallel

    backward = parallel.backward

    def faulty(*args, **kwargs):
        marker = os.environ.get("NNSLICER_TEST_FAULT_ONCE")
        if os.environ.get("NNSLICER_TEST_FAULT_ALWAYS") or (marker and _created(marker)):
            os._exit(1)
        return backward(*args, **kwargs)

    parallel.backward = faulty


def runtime_env(**env_vars):
    """A Ray runtime environment whose workers run :func:`install` with ``env_vars``."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": path, **env_vars}, "worker_process_setup_hook": "ray_faults.install"}
