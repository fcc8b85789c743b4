"""A run directory on disk: its lock, its manifest, its per-sample log and atomic file writes.

Layout of ``RUN_DIR``::

    manifest.json      what the run is (config, packages, model ids, prompt hash, dataset, shard)
    samples.jsonl      one JSON line per finished sample (appended, flushed and fsynced)
    masks/<id>.png     the predicted mask of each finished sample (written before its line)
    trajectories/<id>/ optional: AgentResult.save() of each sample
    overlays/<id>.jpg  optional: ground truth beside the prediction
    summary.json       written at the end of a run (and by ``merge``)
    summary.md
    .lock              held (fcntl.flock) by the one process working in the directory

Crash safety: a sample's files are complete before its line is appended, and a line is the last
thing written for a sample, so after a crash the log holds only finished samples, except perhaps a
torn last line, which :meth:`SampleLog.load` cuts off (the runner's log also cuts a last line that
is JSON but not a whole record; such a line elsewhere means the file is damaged).

Modules: :mod:`~evals.rundir.files` (the paths and atomic writes), :mod:`~evals.rundir.lock`,
:mod:`~evals.rundir.manifest` and :mod:`~evals.rundir.samplelog` (``samples.jsonl``). Every public
name is importable from ``evals.rundir`` itself.
"""

from evals.errors import RunDirError
from evals.rundir.files import RunPaths, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json_file
from evals.rundir.lock import RunLock
from evals.rundir.manifest import INFO_KEY, check_manifest, ensure_manifest, manifest_diff
from evals.rundir.samplelog import RECORD_SCHEMA_VERSION, SampleLog, latest_by_id, open_log

__all__ = [
    "INFO_KEY",
    "RECORD_SCHEMA_VERSION",
    "RunDirError",
    "RunLock",
    "RunPaths",
    "SampleLog",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_manifest",
    "ensure_manifest",
    "latest_by_id",
    "manifest_diff",
    "open_log",
    "read_json_file",
]
