-- Recommendations with their lifecycle across nights. `open`: holds at the cluster's latest
-- snapshot. `resolved`: held before and is gone because the cluster was stopped, downsized or
-- deleted; realized_monthly_savings = (rate when last seen - rate now, 0 if deleted) x month.
-- `closed`: gone for another reason (the cluster got busy, the error cleared).
with

evaluations as (
    select * from intermediate.recommendation_evaluations
),

rates as (
    select * from intermediate.snapshot_rates
),

presence as (
    select * from intermediate.cluster_presence
),

gpu_evidence as (
    select * from intermediate.latest_gpu_evidence
),

spans as (
    select
        cluster_id,
        kind,
        min(snapshot_at) as first_seen_at,
        max(snapshot_at) as last_seen_at,
    from evaluations
    group by cluster_id, kind
),

latest_evidence as (
    select
        spans.*,
        evaluations.monthly_savings,
        evaluations.currency,
        evaluations.reason,
        evaluations.status as status_then,
        evaluations.gpu_count as gpu_count_then,
        evaluations.hourly_rate as rate_then,
    from spans
    inner join evaluations
        on evaluations.cluster_id = spans.cluster_id
        and evaluations.kind = spans.kind
        and evaluations.snapshot_at = spans.last_seen_at
),

with_now as (
    select
        latest_evidence.*,
        presence.is_deleted,
        presence.last_snapshot_at,
        now_rates.status as status_now,
        now_rates.gpu_count as gpu_count_now,
        case when presence.is_deleted then 0 else now_rates.hourly_rate end as rate_now,
    from latest_evidence
    inner join presence on presence.cluster_id = latest_evidence.cluster_id
    inner join rates as now_rates
        on now_rates.cluster_id = presence.cluster_id
        and now_rates.snapshot_at = presence.last_snapshot_at
),

classified as (
    select
        with_now.*,
        -- named, not `*`: a second cluster_id would be ambiguous (on Spark, not only DuckDB)
        gpu_evidence.idle_gpus,
        gpu_evidence.idle_gpu_ids,
        gpu_evidence.min_idle_hours,
        gpu_evidence.billed_hours,
        gpu_evidence.idle_memory_gb,
        case
            when last_seen_at = last_snapshot_at and not is_deleted then 'open'
            when is_deleted
                or (status_now = 'stopped' and status_then <> 'stopped')
                or gpu_count_now < gpu_count_then then 'resolved'
            else 'closed'
        end as status,
    from with_now
    left join gpu_evidence on gpu_evidence.cluster_id = with_now.cluster_id
),

final as (
    select
        substr(md5(cluster_id || '/' || kind), 1, 16) as rec_id,
        cluster_id,
        kind,
        status,
        monthly_savings,
        currency,
        case
            -- an open stop_idle or downsize also names its idle GPUs and what they held
            when status = 'open' and kind in ('stop_idle', 'downsize') and idle_gpus > 0
                then reason || '; GPU ' || idle_gpu_ids || ' below '
                || regexp_replace(cast(getvariable('idle_threshold_pct') as varchar), '\.0+$', '')
                || ' % in at least ' || min_idle_hours || ' of ' || billed_hours || ' h, '
                || cast(round(idle_memory_gb, 1) as varchar) || ' GB held'
            else reason
        end as reason,
        first_seen_at,
        last_seen_at,
        case
            when status = 'resolved'
                then cast((rate_then - rate_now) * getvariable('hours_per_month') as decimal(18, 6))
        end as realized_monthly_savings,
    from classified
)

select * from final
