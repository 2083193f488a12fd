"""Connecting to a Ray cluster for the ``ray`` data engine, and the CLI flags that choose it.

``--address`` is handed to Ray as ``RAY_ADDRESS`` (what ``ray.init()`` reads), so one
setting reaches every place that connects, including ``ladle run``'s prep stage. With no
address a local Ray instance is started; ``auto`` joins the cluster this machine is part
of (``ray start`` on Slurm, a KubeRay pod); ``ray://HOST:PORT`` uses Ray Client.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from ladle.errors import DataError

ENGINES = ("local", "ray")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """``--engine`` and ``--address`` for ``prep``, ``run`` and ``dedup``."""
    p.add_argument(
        "--engine",
        choices=ENGINES,
        help="data engine: local (this process) or ray (a Ray cluster; same output bytes)",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster for --engine ray: auto, ray://HOST:PORT or HOST:PORT "
        "(default: start a local Ray instance)",
    )


def chosen_engine(args: argparse.Namespace) -> str | None:
    """The engine the flags ask for (``--address`` alone implies ray), or None."""
    engine = getattr(args, "engine", None)
    address = getattr(args, "address", None)
    if address:
        if engine == "local":
            raise DataError("--address needs --engine ray (it names a Ray cluster)")
        os.environ["RAY_ADDRESS"] = address
        engine = "ray"
    return engine


def engine_overrides(args: argparse.Namespace) -> list[str]:
    """Recipe overrides implied by the flags (``--engine ray`` sets ``data.engine``)."""
    engine = chosen_engine(args)
    return [f"data.engine={engine}"] if engine else []


def connect(quiet: bool = False) -> Any:
    """Join (or start) the Ray cluster once per process and print its resources."""
    try:
        import ray
    except ImportError as e:
        raise DataError(
            "data.engine: ray needs Ray: pip install 'ladle[ray]' (or use data.engine: local)"
        ) from e
    if not ray.is_initialized():
        # The driver's own modules travel by import path: workers on this machine and
        # a shared install elsewhere both find ``ladle`` without a runtime_env upload.
        try:
            ray.init(logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = os.environ.get("RAY_ADDRESS", "a local instance")
            raise DataError(f"cannot reach the Ray cluster at {where}: {e}") from e
        if not quiet:
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            print(f"ray cluster: {describe(ray.cluster_resources(), nodes)}", file=sys.stderr)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # Ladle reports its own stages
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per dataset otherwise
    return ray


def describe(resources: dict[str, float], nodes: int) -> str:
    """``3 nodes, 48 CPUs, 2 GPUs, 180.0 GiB memory, 60.0 GiB object store``."""
    gib = 1 << 30
    parts = [f"{nodes} node{'s' if nodes != 1 else ''}", f"{resources.get('CPU', 0):g} CPUs"]
    if resources.get("GPU"):
        parts.append(f"{resources['GPU']:g} GPUs")
    parts.append(f"{resources.get('memory', 0) / gib:.1f} GiB memory")
    parts.append(f"{resources.get('object_store_memory', 0) / gib:.1f} GiB object store")
    return ", ".join(parts)


def resolve(value: Any) -> Any:
    """A broadcast value inside a Ray Data function: ``fn_args`` pass ObjectRefs through
    unresolved, and ``ray.get`` of one already in the node's object store is a local read."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value
