"""The lake: the snapshot tables as Parquet, partitioned by UTC day, for engines past DuckDB.

    <lake>/_manifest.json                       the runs exported, the files of every table
    <lake>/snap/metric_points/day=2026-11-13/part-<batch>-0.parquet
    <lake>/meta/runs/day=2026-11-13/part-<batch>-0.parquet
    ...

`export_lake(db, lake)` writes every finished run (status not `running`) that the manifest does
not list yet, in batches of at most `RUNS_PER_BATCH` runs: DuckDB `COPY ... PARTITION_BY (day)`
into `<lake>/_staging/<batch>/`, the files moved into place, then the manifest replaced
atomically (`os.replace`). The manifest is the commit: a reader takes only the files it lists,
and an export that was killed leaves files no manifest lists, which the next export deletes
before it writes the same runs again. A rerun with no new run changes nothing.

Every row carries the `run_id` that wrote it. The bucket tables are append-only here, while the
store keeps one row per (cluster_id, bucket_at) and lets a newer snapshot replace an older one:
a bucket a later run revised is in the lake twice. `SOURCE_SQL` reads the lake back as the
store's tables, the newest snapshot's value per bucket (and its per-GPU rows as a set), so any
engine sees what DuckDB sees. A run rewritten after its export (`snapshot --from-raw`) is not
exported again.

`<lake>` is a local folder (or a mounted file system: NFS, a FUSE-mounted bucket). Writing to
`s3://` directly would need DuckDB's httpfs extension (downloaded at first use, which this
project does not assume) and an object store has no atomic rename; export to a folder and copy
it with the object store's own tool (`aws s3 sync`), or mount the bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from filelock import FileLock, Timeout

from pipeline.errors import ConfigError, GpucostError, LockedError

MANIFEST = "_manifest.json"
STAGING = "_staging"
FORMAT_VERSION = 1
# A batch is the unit a killed export loses; one COPY per table per batch keeps a year's
# backfill to a dozen scans of each table instead of one per run.
RUNS_PER_BATCH = 31

# table -> (the expression giving its UTC partition day, the columns left out)
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "snap.cluster_snapshots": ("snapshot_at", ()),
    "snap.cost_components": ("snapshot_at", ()),
    "snap.projections": ("snapshot_at", ()),
    "snap.alerts": ("snapshot_at", ()),
    "snap.gpu_current": ("snapshot_at", ()),
    "snap.metric_points": ("bucket_at", ()),
    "snap.gpu_metric_points": ("bucket_at", ()),
    "meta.runs": ("started_at", ()),
    # the raw body is kept for diagnosis in the store; no model reads it
    "meta.run_failures": ("recorded_at", ("raw_body",)),
}


# The database's state the models read beside the runs: small tables, each written whole (one
# Parquet file) when its content changed since the last export. Budgets, cost centers and
# suppressions are the configuration a DuckDB build last wrote; `build --engine spark` takes
# them from its own configuration instead (pipeline/engines/spark.py).
STATE_TABLES: tuple[str, ...] = (
    "meta.cost_centers",
    "meta.budgets",
    "meta.closed_months",
    "meta.closed_project_monthly",
    "meta.recommendation_decisions",
    "meta.recommendation_suppressions",
)
STATE_DIR = "state"


class LakeError(GpucostError):
    """The lake cannot be written or read: not a folder, a broken manifest."""


@dataclass
class LakeResult:
    """What an export did: runs and files written, rows per table, seconds."""

    lake: Path
    runs_exported: list[str] = field(default_factory=list)
    runs_already: int = 0
    files_written: int = 0
    rows_per_table: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary_line(self) -> str:
        """One line for the log."""
        rows = ", ".join(f"{t}={n}" for t, n in sorted(self.rows_per_table.items()) if n)
        return (
            f"lake export to {self.lake}: {len(self.runs_exported)} new runs "
            f"({self.runs_already} already exported), {self.files_written} files"
            + (f", rows: {rows}" if rows else "")
            + f" in {self.seconds:.1f} s"
        )


def lake_folder(lake: str | os.PathLike[str]) -> Path:
    """The lake as a local folder; an object-store URL is a `ConfigError` (see the module doc)."""
    text = os.fspath(lake)
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(
            f"--lake {text}: `lake export` writes a local or mounted folder (an object store "
            "has no atomic rename); export to a folder and sync it, see docs/spark.md"
        )
    return Path(text.removeprefix("file://"))


def read_manifest(lake: Path) -> dict[str, Any]:
    """The lake's manifest, or an empty one when the lake is new."""
    path = lake / MANIFEST
    if not path.exists():
        return {"format": FORMAT_VERSION, "runs": {}, "files": {}, "columns": {}}
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LakeError(f"{path}: unreadable manifest: {exc}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise LakeError(f"{path}: manifest format {manifest.get('format')!r} is not supported")
    return manifest


def _write_manifest(lake: Path, manifest: dict[str, Any]) -> None:
    tmp = lake / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    # the commit point: readers see the old manifest or the new one, never a mix
    os.replace(tmp, lake / MANIFEST)
    _fsync_dir(lake)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _table_dir(lake: Path, table: str) -> Path:
    schema, name = table.split(".", 1)
    return lake / schema / name


def _listed(manifest: dict[str, Any]) -> set[str]:
    return {path for files in manifest["files"].values() for path in files}


def _remove_unlisted(lake: Path, manifest: dict[str, Any]) -> None:
    """Delete what a killed export left: staged files and Parquet files no manifest lists."""
    shutil.rmtree(lake / STAGING, ignore_errors=True)
    listed = _listed(manifest)
    for table in TABLES:
        folder = _table_dir(lake, table)
        if not folder.exists():
            continue
        for path in folder.rglob("*.parquet"):
            if path.relative_to(lake).as_posix() not in listed:
                path.unlink()
    state = {entry["file"] for entry in manifest.get("state", {}).values()}
    if (lake / STATE_DIR).exists():
        for path in (lake / STATE_DIR).glob("*.parquet"):
            if path.relative_to(lake).as_posix() not in state:
                path.unlink()
    for tmp in lake.glob(f".{MANIFEST}.*.tmp"):
        tmp.unlink()


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".", 1)
    rows = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, name],
    ).fetchall()
    left_out = TABLES[table][1]
    return [(column, kind) for column, kind in rows if column not in left_out]


def _batches(runs: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(runs), RUNS_PER_BATCH):
        yield runs[start : start + RUNS_PER_BATCH]


def export_on_connection(con: duckdb.DuckDBPyConnection, lake: Path) -> LakeResult:
    """Export the runs not yet in the lake from an open store connection (see the module)."""
    started = time.perf_counter()
    result = LakeResult(lake=lake)
    lake.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(str(lake / ".lock"), timeout=0)
        lock.acquire(timeout=0, blocking=False)
    except Timeout:
        raise LockedError(f"another export holds the lake's lock {lake / '.lock'}") from None
    try:
        manifest = read_manifest(lake)
        _remove_unlisted(lake, manifest)
        con.execute("set TimeZone = 'UTC'")
        finished = [
            row[0]
            for row in con.execute(
                "select run_id from meta.runs where status <> 'running' order by run_id"
            ).fetchall()
        ]
        done = manifest["runs"]
        new = [run for run in finished if run not in done]
        result.runs_already = len(finished) - len(new)
        manifest["columns"] = {table: _columns(con, table) for table in TABLES}
        for batch_runs in _batches(new):
            _export_batch(con, lake, manifest, batch_runs, result)
            result.runs_exported.extend(batch_runs)
        changed, replaced = _export_state(con, lake, manifest, result)
        if changed or (not new and not (lake / MANIFEST).exists()):
            _write_manifest(lake, manifest)
            for old in replaced:
                (lake / old).unlink(missing_ok=True)
    finally:
        lock.release()
    result.seconds = time.perf_counter() - started
    return result


def _state_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".", 1)
    return [
        (str(c), str(k))
        for c, k in con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, name],
        ).fetchall()
    ]


def _export_state(
    con: duckdb.DuckDBPyConnection, lake: Path, manifest: dict[str, Any], result: LakeResult
) -> tuple[bool, list[str]]:
    """Write each state table whose content changed (by digest) as one new Parquet file and
    point the manifest at it; return whether any changed, and the files they replace (deleted
    once the manifest is written). Unchanged tables write nothing: a rerun touches no file."""
    state = manifest.setdefault("state", {})
    replaced: list[str] = []
    changed = False
    for table in STATE_TABLES:
        columns = _state_columns(con, table)
        if not columns:
            continue  # a database older than the table's migration
        # names are our own constants
        rows = con.execute(f"select * from {table} order by all").fetchall()
        digest = hashlib.sha256(repr(rows).encode("utf-8")).hexdigest()
        if state.get(table, {}).get("digest") == digest:
            continue
        (lake / STATE_DIR).mkdir(exist_ok=True)
        relative = f"{STATE_DIR}/{table.replace('.', '__')}-{digest[:16]}.parquet"
        tmp = lake / STATE_DIR / f".{uuid.uuid4().hex}.tmp"
        con.execute(f"copy (select * from {table}) to '{tmp}' (format parquet)")
        os.replace(tmp, lake / relative)
        result.files_written += 1
        result.rows_per_table[table] = len(rows)
        changed = True
        if table in state and state[table]["file"] != relative:
            replaced.append(state[table]["file"])
        state[table] = {"file": relative, "columns": columns, "digest": digest}
    return changed, replaced


def _export_batch(
    con: duckdb.DuckDBPyConnection,
    lake: Path,
    manifest: dict[str, Any],
    runs: list[str],
    result: LakeResult,
) -> None:
    batch = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    staging = lake / STAGING / batch
    staging.mkdir(parents=True)
    con.execute("create or replace temp table _lake_runs (run_id varchar primary key)")
    con.executemany("insert into _lake_runs values (?)", [[r] for r in runs])
    moved: dict[str, list[str]] = {}
    try:
        for table, (day_column, _) in TABLES.items():
            columns = ", ".join(f'"{c}"' for c, _ in manifest["columns"][table])
            target = staging / table
            # names are our own constants; the path is a folder we created
            count = con.execute(
                f"select count(*) from {table} where run_id in (select run_id from _lake_runs)"
            ).fetchone()
            rows = int(count[0]) if count else 0
            result.rows_per_table[table] = result.rows_per_table.get(table, 0) + rows
            if not rows:
                continue
            con.execute(
                f"copy (select {columns}, cast({day_column} as date) as day from {table} "
                "where run_id in (select run_id from _lake_runs)) "
                f"to '{target}' (format parquet, compression zstd, partition_by (day), "
                f"filename_pattern 'part-{batch}-{{i}}')"
            )
            final_dir = _table_dir(lake, table)
            for path in sorted(target.rglob("*.parquet")):
                relative = path.relative_to(target)
                destination = final_dir / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, destination)
                moved.setdefault(table, []).append(destination.relative_to(lake).as_posix())
                result.files_written += 1
        for table, files in moved.items():
            manifest["files"].setdefault(table, []).extend(files)
        exported_at = datetime.now(UTC).isoformat(timespec="seconds")
        for run in runs:
            manifest["runs"][run] = {"batch": batch, "exported_at": exported_at}
        _write_manifest(lake, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        con.execute("drop table if exists _lake_runs")


def export_lake(db: str | os.PathLike[str], lake: str | os.PathLike[str]) -> LakeResult:
    """Write the runs of `db` not yet in `lake` as day-partitioned Parquet (see the module).

    Raises `ConfigError` (exit 2) when the database does not exist or `lake` is an object-store
    URL, `LockedError` (exit 5) when a run holds the database's lock or another export the
    lake's.
    """
    from pipeline.store import Store

    path = Path(db)
    if not path.exists():
        raise ConfigError(f"database {path} does not exist: run `gpucost snapshot` first")
    folder = lake_folder(lake)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--lake {folder} is not a folder")
    # the store's lock: a snapshot writing the runs while they are exported would be read half
    with Store.open(path) as store:
        return export_on_connection(store.con, folder)


# ------------------------------------------------------------------------------- reading back

# The lake read back as the store's tables (`{table}` is the lake's rows of that table, as the
# engine reads them): standard SQL that DuckDB and Spark both run. Buckets: the newest snapshot's
# row per (cluster_id, bucket_at), as the store keeps it; its per-GPU rows as a set with it.
SOURCE_SQL: dict[str, str] = {
    "snap.metric_points": (
        "select {columns} from (select *, row_number() over (partition by cluster_id, bucket_at "
        "order by snapshot_at desc, run_id desc) as _lake_rank from {metric_points}) "
        "where _lake_rank = 1"
    ),
    "snap.gpu_metric_points": (
        "select {g_columns} from {gpu_metric_points} as g inner join ("
        "select cluster_id, bucket_at, snapshot_at, run_id from (select cluster_id, "
        "bucket_at, snapshot_at, run_id, row_number() over (partition by cluster_id, "
        "bucket_at order by snapshot_at desc, run_id desc) as _lake_rank "
        "from {metric_points}) where _lake_rank = 1) as w "
        "on w.cluster_id = g.cluster_id and w.bucket_at = g.bucket_at "
        "and w.snapshot_at = g.snapshot_at and w.run_id = g.run_id"
    ),
}


def raw_view(table: str) -> str:
    """The name under which an engine registers a table's lake files as they are."""
    return "_lake_" + table.replace(".", "__")


def source_select(table: str, manifest: dict[str, Any], quote: str) -> str:
    """The select that reads a table back from its raw view (`raw_view`) as the store holds
    it; `quote` is the engine's identifier quote (DuckDB `"`, Spark `` ` ``)."""
    columns = [column for column, _ in manifest["columns"][table]]
    names = ", ".join(f"{quote}{column}{quote}" for column in columns)
    template = SOURCE_SQL.get(table)
    if template is None:
        return f"select {names} from {raw_view(table)}"
    return template.format_map(
        {
            "columns": names,
            "g_columns": ", ".join(f"g.{quote}{column}{quote}" for column in columns),
            "metric_points": raw_view("snap.metric_points"),
            "gpu_metric_points": raw_view("snap.gpu_metric_points"),
        }
    )


def lake_files(lake: Path, manifest: dict[str, Any], table: str) -> list[str]:
    """The absolute paths of a table's committed files."""
    return [str(lake / path) for path in manifest["files"].get(table, [])]


def attach_lake(con: duckdb.DuckDBPyConnection, lake: str | os.PathLike[str]) -> None:
    """Create, on a DuckDB connection, the views `snap.*` and `meta.*` over the lake's committed
    files, read back as the store holds them (what the staging models read): DuckDB over the
    lake, for a check or an ad-hoc query without the store."""
    folder = lake_folder(lake)
    manifest = read_manifest(folder)
    con.execute("set TimeZone = 'UTC'")
    for table in TABLES:
        columns = manifest["columns"].get(table) or []
        if not columns:
            raise LakeError(f"the lake {folder} has no columns for {table}: run `lake export`")
        schema, name = table.split(".", 1)
        con.execute(f'create schema if not exists "{schema}"')
        names = ", ".join(f'"{column}"' for column, _ in columns)
        files = lake_files(folder, manifest, table)
        raw = raw_view(table)
        if files:
            listed = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
            con.execute(
                f"create or replace temp view {raw} as select {names} "
                f"from read_parquet([{listed}], hive_partitioning = false, union_by_name = true)"
            )
        else:
            typed = ", ".join(f'cast(null as {kind}) as "{column}"' for column, kind in columns)
            con.execute(f"create or replace temp view {raw} as select {typed} where false")
    for table in TABLES:
        select = source_select(table, manifest, '"')
        con.execute(f"create or replace view {table} as {select}")
    for table, entry in manifest.get("state", {}).items():
        path = str(folder / entry["file"]).replace("'", "''")
        con.execute(f"create or replace view {table} as select * from read_parquet('{path}')")
