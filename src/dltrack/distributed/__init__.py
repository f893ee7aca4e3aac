"""Training beyond one process (notebook 05): data-parallel training of the course CNN, tracked
as one MLflow run whatever the number of processes.

The training script is :mod:`dltrack.distributed.train`. It runs unchanged under ``torchrun``
(one machine or several), as a plain single process, and as an Azure ML command job whose code
folder is ``src/`` (this package and the model code it imports; see ``src/.amlignore``).

What a launcher tells each process, as environment variables (``torchrun`` and Azure ML's
``PyTorchDistribution`` both set them): ``RANK`` (global rank), ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT`` (where rank 0 listens), and, from ``torchrun``,
``LOCAL_WORLD_SIZE`` (processes on this machine). Lightning reads them; :func:`launch_layout`
turns them into ``Trainer(devices=..., num_nodes=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["launch_layout", "node_id"]


def launch_layout(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(devices, num_nodes)``: processes per machine and machines, from the launcher's
    environment (``LOCAL_WORLD_SIZE`` and ``WORLD_SIZE``); ``(1, 1)`` for a plain process.

    Lightning refuses a ``Trainer(devices=...)`` that differs from what the launcher started,
    so the script takes both from here unless told otherwise.

    Raises:
        ValueError: ``WORLD_SIZE`` is not a multiple of ``LOCAL_WORLD_SIZE``.
    """
    environ = os.environ if environ is None else environ
    world = int(environ.get("WORLD_SIZE", 1))
    local = int(environ.get("LOCAL_WORLD_SIZE", world))
    if local < 1 or world % local:
        raise ValueError(
            f"WORLD_SIZE={world} must be a positive multiple of LOCAL_WORLD_SIZE={local} "
            "(the same number of processes on every machine)"
        )
    return local, world // local


def node_id(node_rank: int) -> str:
    """The system-metrics node id of a machine: ``node-<node rank>`` (0 for the machine of global
    rank 0, as ``torchrun``'s ``GROUP_RANK``), so its metrics read
    ``system/node-1/cpu_utilization_percentage`` in the run.

    System metrics describe a whole machine (MLflow samples ``psutil.cpu_percent()`` and
    ``virtual_memory()``, not a process), so one process per machine logs them.
    """
    return f"node-{int(node_rank)}"
