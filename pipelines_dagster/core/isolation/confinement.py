"""Limits and PR_SET_NO_NEW_PRIVS for every unit process."""

import ctypes
import resource
from collections.abc import Callable
from dataclasses import dataclass

PR_SET_NO_NEW_PRIVS = 38
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


@dataclass(frozen=True)
class Confinement:
    """Limits of every process of a unit, each process's own (address space, file size, CPU seconds), and of the
    number of processes (threads included) of its user: None when the unit runs as the pipeline's own user,
    whose count holds the pipeline's processes too."""

    memory_mb: int
    file_mb: int
    cpu_s: int
    processes: int | None = None

    def preexec(self) -> Callable[[], None]:
        """For Popen's preexec_fn: runs in the child after the user switch, before exec. It calls only C functions
        resolved here (setrlimit, prctl) and imports nothing, so no lock another thread of ours held at fork time
        is needed (CPython also takes the import lock around a fork with a preexec_fn). Lowering a limit needs no
        privilege; hard limits equal soft ones, so the unit cannot raise them."""
        wanted = [(resource.RLIMIT_AS, self.memory_mb << 20), (resource.RLIMIT_FSIZE, self.file_mb << 20),
                  (resource.RLIMIT_CPU, self.cpu_s), (resource.RLIMIT_CORE, 0)]  # no core dump of its secrets
        if self.processes is not None:
            wanted.append((resource.RLIMIT_NPROC, self.processes))
        limits = []
        for which, value in wanted:
            hard = resource.getrlimit(which)[1]
            limits.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
        setrlimit, prctl = resource.setrlimit, _prctl

        def confine() -> None:
            for which, value in limits:
                setrlimit(which, (value, value))
            if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")

        return confine


