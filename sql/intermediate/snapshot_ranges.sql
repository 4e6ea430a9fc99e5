-- For each snapshot, the span of time in which it is the nearest snapshot of its cluster:
-- from the midpoint with the previous one to the midpoint with the next one (a tie goes to the
-- later snapshot). Two families: among all snapshots, and among snapshots billing GPUs (the
-- ones that can price a billed bucket).
with

rates as (
    select * from intermediate.snapshot_rates
),

all_snapshots as (
    select
        cluster_id,
        snapshot_at,
        snapshot_ms,
        'any' as family,
        lag(snapshot_ms) over (partition by cluster_id order by snapshot_ms) as previous_ms,
        lead(snapshot_ms) over (partition by cluster_id order by snapshot_ms) as next_ms,
    from rates
),

billing_snapshots as (
    select
        cluster_id,
        snapshot_at,
        snapshot_ms,
        'billing' as family,
        lag(snapshot_ms) over (partition by cluster_id order by snapshot_ms) as previous_ms,
        lead(snapshot_ms) over (partition by cluster_id order by snapshot_ms) as next_ms,
    from rates
    where bills_gpus
),

unioned as (
    select * from all_snapshots
    union all
    select * from billing_snapshots
),

final as (
    select
        cluster_id,
        snapshot_at,
        family,
        coalesce((previous_ms + snapshot_ms) // 2, -9223372036854775807) as from_ms,
        coalesce((snapshot_ms + next_ms) // 2, 9223372036854775807) as to_ms,
    from unioned
)

select * from final
