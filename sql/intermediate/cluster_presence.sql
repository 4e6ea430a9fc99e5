-- Each cluster's latest snapshot and whether it has since been deleted: a later complete or
-- partial run did not see it and did not record it as failed or skipped.
with

rates as (
    select * from intermediate.snapshot_rates
),

runs as (
    select * from staging.runs
),

failures as (
    select * from staging.run_failures
),

latest as (
    select
        cluster_id,
        max(snapshot_at) as last_snapshot_at,
    from rates
    group by cluster_id
),

deleted as (
    select
        latest.cluster_id,
        min(runs.run_data_at) as deleted_by,
    from latest
    inner join runs
        on runs.run_data_at > latest.last_snapshot_at
    where runs.status in ('complete', 'partial')
    and not exists (
        select 1 from failures
        where failures.run_id = runs.run_id
        and failures.cluster_id = latest.cluster_id
        and failures.outcome <> 'gone'
    )
    group by latest.cluster_id
),

final as (
    select
        latest.cluster_id,
        latest.last_snapshot_at,
        deleted.deleted_by is not null as is_deleted,
        deleted.deleted_by as deleted_by_run_at,
    from latest
    left join deleted on deleted.cluster_id = latest.cluster_id
)

select * from final
