"""``python -m evals ray <dataset> ...``: eval shards as Ray tasks across a cluster, merged into one run.

Each of ``--shards N`` shards is the dataset's ``run`` command with ``--shard i/N`` (every other flag
as given), executed by a Ray task in a fresh worker process with its own SAM 3 engine: on its own
GPU (``num_gpus=1``) when the cluster has GPUs, on CPU otherwise. All shards talk to the MLLM
endpoints given by ``--llm-base-url`` (repeatable: shard ``i`` uses the ``i mod len``-th, so several
vLLM servers share the load; vLLM's own data parallelism can serve behind one URL too). When every
shard has finished, ``python -m evals merge`` logic writes one ``samples.jsonl``, the mask files and
the summary an unsharded run would have written, into ``RUN_DIR``.

Layout: shard ``i`` of ``N`` runs in ``RUN_DIR/shards/<i>-of-<N>`` (a normal run directory, so a
rerun of the same command resumes every shard where it stopped). A shard that ran on another node
sends its finished directory back to the driver through Ray, so no shared file system is needed
(with one, the copy is simply rewritten with the same bytes).

Connect with ``--address auto`` (a running cluster, e.g. after ``ray start --head``) or
``--address ray://HOST:10001`` (Ray Client); without ``--address`` a local cluster is started with
this machine's CPUs and GPUs. Every node needs the same Python environment, the dataset at the
same path, and SAM 3 weights at the ``--sam3`` path (or the hub cache).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.errors import EvalInputError
from evals.run_options import RunReport, parse_shard

logger = logging.getLogger(__name__)

DATASETS = ("reasonseg", "omnilabel")
#: Runs one command (a function of the parsed arguments) and maps its outcome to an exit code.
Finish = Callable[[Callable[[argparse.Namespace], RunReport], argparse.Namespace], int]
#: Adds a dataset's ``run`` subcommand to a subparsers object.
AddParser = Callable[[argparse._SubParsersAction], None]
SHARDS_DIR = "shards"
_LOCK_NAME = ".lock"


# ----------------------------------------------------------------------------- the shard task


@dataclass
class ShardOutcome:
    """What one shard task returns to the driver.

    Attributes:
        index: The shard index ``i`` of ``i/N``.
        node_id: The Ray node it ran on.
        host: That node's host name.
        seconds: Wall time of the shard's run.
        summary: The shard's ``summary.json`` object.
        files: The shard directory's files (relative path -> bytes), when it ran on another node
            than the driver; ``None`` when the driver can read the directory itself.
    """

    index: int
    node_id: str
    host: str
    seconds: float
    summary: dict[str, Any]
    files: dict[str, bytes] | None = field(default=None, repr=False)


def _runner(dataset: str) -> Callable[[argparse.Namespace], RunReport]:
    if dataset == "reasonseg":
        from evals import run_reasonseg

        return run_reasonseg.run
    if dataset == "omnilabel":
        from evals import run_omnilabel

        return run_omnilabel.run
    raise EvalInputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def run_shard(dataset: str, args: argparse.Namespace, driver_node: str,
              command: Sequence[str] = ()) -> ShardOutcome:
    """Run one shard (the body of the Ray task; also callable directly).

    Args:
        dataset: ``"reasonseg"`` or ``"omnilabel"``.
        args: The dataset's ``run`` flags with ``shard`` and ``out`` set for this shard.
        driver_node: The driver's Ray node id: a shard on another node ships its files back.
        command: The driver's command line; the shard's manifest records it (not the Ray worker's).

    Returns:
        The :class:`ShardOutcome`.
    """
    import ray

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING - 10 * min(int(getattr(args, "verbose", 0)), 2),
                            format="%(levelname)s %(name)s: %(message)s")
    node = ray.get_runtime_context().get_node_id()
    if command:  # each shard has a worker process of its own (max_calls=1)
        sys.argv = [*command, f"[ray shard {args.shard.index}/{args.shard.count}]"]
    logger.info("shard %d/%d on %s (node %s, CUDA_VISIBLE_DEVICES=%s)", args.shard.index, args.shard.count,
                socket.gethostname(), node[:12], os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    start = time.perf_counter()
    report = _runner(dataset)(args)
    seconds = time.perf_counter() - start
    files = None if node == driver_node else _read_tree(Path(args.out))
    return ShardOutcome(index=args.shard.index, node_id=node, host=socket.gethostname(), seconds=seconds,
                        summary=report.summary, files=files)


def _read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (its lock file excepted), by path relative to ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != _LOCK_NAME}


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    from evals.rundir import atomic_write_bytes

    for rel, data in files.items():
        atomic_write_bytes(root / rel, data)


# ----------------------------------------------------------------------------- the driver


def shard_args(args: argparse.Namespace, index: int, count: int, urls: Sequence[str] | None) -> argparse.Namespace:
    """The ``run`` flags of shard ``index`` of ``count``: its slice, its directory, its endpoint."""
    ns = copy.copy(args)
    # Ray workers need not share the driver's working directory: make local paths absolute.
    for name in ("data", "gt", "images", "llm_cache"):
        if getattr(ns, name, None):
            setattr(ns, name, type(getattr(ns, name))(Path(getattr(ns, name)).resolve()))
    if getattr(ns, "sam3", None) and Path(ns.sam3).exists():
        ns.sam3 = str(Path(ns.sam3).resolve())
    ns.shard = parse_shard(f"{index}/{count}")
    ns.out = Path(args.out).resolve() / SHARDS_DIR / f"{index}-of-{count}"
    ns.llm_base_url = urls[index % len(urls)] if urls else None
    ns.no_progress = True
    if getattr(args, "llm_cache", None) and getattr(args, "llm_cache_mode", "auto") != "replay" and count > 1:
        # shards record side by side: one file each, so no two processes append to one file
        cache = Path(ns.llm_cache)
        ns.llm_cache = str(cache.with_name(f"{cache.stem}.shard-{index}-of-{count}{cache.suffix}"))
    for name in ("func", "shards", "address", "gpus_per_shard", "cpus_per_shard", "group", "command"):
        if hasattr(ns, name):
            delattr(ns, name)
    return ns


def _connect(address: str | None) -> Any:
    try:
        import ray
    except ImportError as e:
        raise EvalInputError("Ray is not installed; install it with: pip install 'sam3agent[ray]'") from e
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if address:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except ConnectionError as e:
            raise EvalInputError(f"cannot connect to the Ray cluster at {address!r}: {e}; start one with "
                                 "'ray start --head' or omit --address for a local one") from e
    return ray


def _gpus_per_shard(ray: Any, requested: float | None, device: str | None) -> float:
    if requested is not None:
        return requested
    if device == "cpu":
        return 0.0
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def run_on_ray(dataset: str, args: argparse.Namespace) -> RunReport:
    """Run ``args.shards`` shards of the dataset's ``run`` command as Ray tasks, then merge them.

    Raises:
        EvalInputError: Bad flags, Ray missing or unreachable, a shard's bad input, a merge problem.
        RunAborted: A shard stopped after too many consecutive LLM backend failures (rerun to resume).
    """
    from evals import merge

    if args.shard is not None:
        raise EvalInputError("--shard selects one slice of a plain 'run'; with 'ray' use --shards N")
    if args.shards < 1:
        raise EvalInputError(f"--shards must be >= 1, got {args.shards}")
    urls = list(args.llm_base_url) if args.llm_base_url else None
    ray = _connect(args.address)
    # Through Ray Client (ray://) the driver's files live on this machine, not on any cluster node.
    remote_driver = bool(args.address and str(args.address).startswith("ray://"))
    driver_node = "" if remote_driver else ray.get_runtime_context().get_node_id()
    gpus = _gpus_per_shard(ray, args.gpus_per_shard, args.device)
    # max_calls=1: every shard gets a fresh worker process (its own engine, GPU memory returned after)
    task = ray.remote(max_calls=1)(run_shard).options(num_cpus=args.cpus_per_shard, num_gpus=gpus,
                                                      max_retries=0, name=f"evals-{dataset}-shard")
    shard_list = [shard_args(args, i, args.shards, urls) for i in range(args.shards)]
    logger.info("%d %s shards on Ray (%s CPU, %s GPU each), LLM endpoints: %s", args.shards, dataset,
                args.cpus_per_shard, gpus, ", ".join(urls) if urls else "from the environment / default")
    pending = {task.remote(dataset, ns, driver_node, list(sys.argv)): ns for ns in shard_list}
    failures: list[tuple[argparse.Namespace, BaseException]] = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        ns = pending.pop(done[0])
        try:
            outcome: ShardOutcome = ray.get(done[0])
        except Exception as e:  # a failed shard: the others finish first, then the first failure is raised
            failures.append((ns, _cause(e)))
            logger.error("shard %d/%d failed: %s", ns.shard.index, ns.shard.count, _cause(e))
            continue
        if outcome.files is not None:
            _write_tree(Path(ns.out), outcome.files)
        logger.info("shard %d/%d finished on %s in %.1f s", outcome.index, args.shards, outcome.host,
                    outcome.seconds)
    if failures:
        ns, error = failures[0]
        if isinstance(error, EvalInputError | RuntimeError):
            raise error
        raise RuntimeError(f"shard {ns.shard.index}/{ns.shard.count} failed: {error}") from error
    return merge.merge([Path(ns.out) for ns in shard_list], Path(args.out), getattr(args, "gt", None))


def _cause(error: BaseException) -> BaseException:
    """The exception a Ray task raised (Ray wraps it in a ``RayTaskError``)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


# ----------------------------------------------------------------------------- command line


def _cmd(dataset: str, finish: Finish) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        return finish(lambda a: run_on_ray(dataset, a), args)

    return handler


def add_ray_command(top: argparse._SubParsersAction, run_parsers: dict[str, AddParser], finish: Finish) -> None:
    """Register ``ray <dataset>`` on the top-level subparsers of :func:`evals.cli.build_parser`.

    ``run_parsers`` maps each dataset to the function that adds its ``run`` subcommand, and ``finish``
    runs a command and maps its outcome to an exit code (both are the command line's, passed in so that
    this module does not import it).

    Each ``ray <dataset>`` takes every flag of ``<dataset> run`` (copied from that parser, so the
    two cannot drift) plus ``--shards``, ``--address``, ``--gpus-per-shard``, ``--cpus-per-shard``,
    and a repeatable ``--llm-base-url``. With ``--llm-cache`` in ``auto``/``record`` mode each shard
    records to its own file (``NAME.shard-<i>-of-<N>.jsonl`` beside ``NAME.jsonl``); ``replay``
    reads the one file given.
    """
    ray_parser = top.add_parser("ray", help="run eval shards as Ray tasks (multi-GPU, multi-node) and merge them",
                                description=__doc__.split("\n\n")[1] if __doc__ else None)
    commands = ray_parser.add_subparsers(dest="command", required=True, metavar="DATASET")
    for dataset in DATASETS:
        scratch = argparse.ArgumentParser(add_help=False).add_subparsers()
        run_parsers[dataset](scratch)
        run_parser = scratch.choices["run"]
        p = commands.add_parser(dataset, parents=[run_parser], conflict_handler="resolve",
                                help=f"'{dataset} run' split into Ray tasks, merged into one run",
                                description=f"Run '{dataset} run --shard i/N' for i = 0..N-1 as Ray tasks, each "
                                            "with its own SAM 3 (one GPU each when the cluster has GPUs), then "
                                            "merge the shards into RUN_DIR as an unsharded run would write it.")
        group = p.add_argument_group("Ray")
        group.add_argument("--shards", type=int, required=True, metavar="N", help="number of shards (Ray tasks)")
        group.add_argument("--address", default=None, metavar="ADDR",
                           help="Ray cluster: 'auto' (a running one), 'ray://HOST:10001' (Ray Client); "
                                "default: start a local one")
        group.add_argument("--gpus-per-shard", type=float, default=None, metavar="G",
                           help="GPUs per shard (default: 1 when the cluster has GPUs and --device is not cpu)")
        group.add_argument("--cpus-per-shard", type=float, default=1.0, metavar="C", help="CPUs per shard (default 1)")
        p.add_argument("--shard", type=parse_shard, default=None, help=argparse.SUPPRESS)  # use --shards
        group.add_argument("--llm-base-url", action="append", default=None, metavar="URL",
                           help="OpenAI-compatible endpoint; repeat it to spread shards round-robin over "
                                "several vLLM servers (default: SAM3AGENT_LLM_BASE_URL or localhost:8000)")
        p.set_defaults(func=_cmd(dataset, finish))
