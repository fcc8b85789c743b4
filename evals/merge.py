"""``python -m evals merge RUN_DIR... --out DIR``: shards of one run into one run directory.

The shard directories must come from the same command with ``--shard 0/N`` .. ``--shard N-1/N``
(manifests equal except ``shard`` and ``info``), each finished (it has a ``summary.json``). The
output holds one ``samples.jsonl`` (records ordered by id), the mask files, and the summary an
unsharded run would have written, computed the same way from the same records. Trajectories and
overlays stay in the shard directories.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals import run_omnilabel, run_reasonseg
from evals.omnilabel import load_gt
from evals.run_options import RunReport, file_sha256, write_viewer_index
from evals.rundir import (
    RunDirError,
    RunLock,
    RunPaths,
    SampleLog,
    atomic_write_bytes,
    ensure_manifest,
    manifest_diff,
    read_json_file,
)
from evals.summary import write_summary

_NOT_COMPARED = ("info", "shard")


def _check_manifests(dirs: Sequence[Path], manifests: Sequence[dict[str, Any]]) -> None:
    base = manifests[0]
    for d, m in zip(dirs[1:], manifests[1:], strict=True):
        diffs = manifest_diff(base, m, ignore=_NOT_COMPARED)
        if diffs:
            raise RunDirError(f"{d} was run with a different setup than {dirs[0]}: {'; '.join(diffs[:12])}; "
                              "merge only the shards of one command")
    shards = [m.get("shard") for m in manifests]
    for d, shard in zip(dirs, shards, strict=True):
        if not shard:
            raise RunDirError(f"{d} is not a shard (it was run without --shard); merge takes shard directories")
    counts = {s["count"] for s in shards}
    if len(counts) != 1:
        raise RunDirError(f"the shards disagree on N in --shard i/N ({sorted(counts)}); merge one sharding")
    count = counts.pop()
    seen = [s["index"] for s in shards]
    missing = sorted(set(range(count)) - set(seen))
    repeated = sorted({i for i in seen if seen.count(i) > 1})
    if missing or repeated:
        detail = "; ".join(filter(None, [
            f"missing {', '.join(f'{i}/{count}' for i in missing)}" if missing else "",
            f"given twice {', '.join(f'{i}/{count}' for i in repeated)}" if repeated else ""]))
        raise RunDirError(f"merge needs each of the {count} shards exactly once: {detail}")


def _load_records(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for d in dirs:
        paths = RunPaths(d)
        if not paths.summary_json.exists():
            raise RunDirError(f"{d} has no summary.json: that shard has not finished; rerun its command first")
        for r in SampleLog(paths.samples, complete=True).load(repair=False):
            if r["id"] in records and records[r["id"]].get("_from") != str(d):
                raise RunDirError(f"sample {r['id']} appears in two shards ({records[r['id']]['_from']} and {d})")
            records[r["id"]] = {**r, "_from": str(d)}
    return list(records.values())


def _sort_key(dataset: str) -> Any:
    if dataset == "omnilabel":
        return lambda r: (int(r["image_id"]), int(r["description_id"]))
    return lambda r: r["id"]


def merge(dirs: Sequence[Path], out: Path, gt_path: Path | None = None) -> RunReport:
    """Merge shard directories into ``out`` and write its summary.

    Args:
        dirs: The shard run directories (any order).
        out: The output run directory (created; merging again into it replaces its records).
        gt_path: OmniLabel ground truth (default: the path recorded in the manifests).

    Raises:
        RunDirError: Mismatched manifests, a missing, repeated or unfinished shard, a different
            ground truth, or an output directory holding a different run.
    """
    if not dirs:
        raise RunDirError("merge needs at least one shard directory")
    manifests = [read_json_file(RunPaths(d).manifest, "manifest") for d in dirs]
    _check_manifests(dirs, manifests)
    base = manifests[0]
    dataset = base["dataset"]["name"]
    tagged = sorted(_load_records(dirs), key=_sort_key(dataset))
    manifest = {**base, "shard": None,
                "info": {**base.get("info", {}), "merged_from": [str(Path(d).resolve()) for d in dirs]}}
    paths = RunPaths(out)
    with RunLock(paths):
        ensure_manifest(paths, manifest)
        records = []
        for r in tagged:
            source = Path(r.pop("_from"))
            if r.get("mask_file"):
                atomic_write_bytes(paths.root / r["mask_file"], (source / r["mask_file"]).read_bytes())
            records.append(r)
        SampleLog(paths.samples).rewrite(records)
        if dataset == "omnilabel":
            gt_file = Path(gt_path or base["info"]["gt"])
            if not gt_file.is_file() or file_sha256(gt_file) != base["dataset"]["gt_sha256"]:
                raise RunDirError(f"ground truth {gt_file} is missing or not the file the shards were run on; "
                                  "pass the right one with --gt")
            summary = run_omnilabel.summarize(manifest, records, load_gt(gt_file), paths)
        else:
            summary = run_reasonseg.summarize(manifest, records)
        markdown = write_summary(paths, summary)
    write_viewer_index(paths.root)
    return RunReport(paths=paths, summary=summary, markdown=markdown)
