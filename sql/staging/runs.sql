-- The runs ledger, with each run's data time (its earliest snapshot instant).
with

runs as (
    select * from meta.runs
),

snapshots as (
    select * from snap.cluster_snapshots
),

run_times as (
    select
        run_id,
        min(snapshot_at) as run_data_at,
        count(*) as clusters_snapshotted,
    from snapshots
    group by run_id
),

final as (
    select
        runs.run_id,
        runs.status,
        runs.started_at,
        runs.finished_at,
        run_times.run_data_at,
        coalesce(run_times.clusters_snapshotted, 0) as clusters_snapshotted,
    from runs
    left join run_times on run_times.run_id = runs.run_id
)

select * from final
