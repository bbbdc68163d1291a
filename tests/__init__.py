"""The test suite. Two test processes share the machine's cores (pytest -n 2) and most tests start runs of their
own, so each library keeps to one thread: the processes do not crowd each other's threads off the cores. Set here,
before conftest imports numpy, and inherited by the runs the tests start."""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_var, "1")
