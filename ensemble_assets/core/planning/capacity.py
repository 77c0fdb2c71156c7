"""How many instances may train at once on this machine, and with how many XGBoost threads.

The plan sizes every instance against a memory budget and records each subset's estimated peak
(``estimated_peak_bytes``). Running instances side by side multiplies that peak, so the number of
parallel instances is the budget divided by the largest estimate — never more than fit — and the
cores are shared out so that ``parallel instances × threads per instance ≤ cores``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping


def machine_cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class TrainingCapacity:
    parallel_instances: int      # the concurrency pool's limit
    threads_per_instance: int    # XGBoost nthread of each instance run
    memory_budget_bytes: int
    largest_instance_peak_bytes: int
    cores: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def training_capacity(plan: Mapping[str, Any], cores: int | None = None,
                      memory_budget_bytes: int | None = None) -> TrainingCapacity:
    """Parallel instances = ⌊memory budget / largest estimated instance peak⌋, at least 1 (one
    instance always runs: the plan already sized it to the budget), at most the cores; threads =
    ⌊cores / parallel instances⌋. ``memory_budget_bytes`` defaults to the plan's own budget."""
    cores = max(1, int(cores or machine_cores()))
    budget = int(memory_budget_bytes if memory_budget_bytes is not None else plan["memory_budget_bytes"])
    peaks = [int(s["estimated_peak_bytes"]) for s in plan.get("subsets", [])]
    largest = max(peaks) if peaks else 0
    fit = budget // largest if largest > 0 else cores
    limit = max(1, min(int(fit), cores))
    why = (f"⌊{budget / 2**30:.2f} GiB budget / {largest / 2**30:.2f} GiB largest instance peak⌋ = {fit}, "
           f"capped by {cores} core(s) → {limit} parallel instance(s) × {cores // limit} thread(s)")
    return TrainingCapacity(limit, max(1, cores // limit), budget, largest, cores, why)


def threads_for(pool_limit: int, configured: int = 0, cores: int | None = None) -> int:
    """XGBoost threads of one instance run when ``pool_limit`` instances may run at once:
    ⌊cores / pool_limit⌋, or fewer when the settings ask for fewer (``configured`` > 0)."""
    cores = max(1, int(cores or machine_cores()))
    share = max(1, cores // max(1, int(pool_limit)))
    return min(share, configured) if configured and configured > 0 else share


def peak_rss_bytes() -> int:
    """This process's peak resident memory: Linux's ``VmHWM``, else ``ru_maxrss``. (On Linux
    ``ru_maxrss`` survives ``exec``: a process started by a large parent reports the parent's
    memory at the fork as its own peak; ``VmHWM`` belongs to the process's own address space.)"""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
