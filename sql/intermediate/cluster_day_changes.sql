-- One row per cluster and UTC day with billed buckets, stopped buckets or both: its billed hours,
-- GPUs and cost per billed GPU-hour that day and the day before, from which an anomaly's cause
-- is read (marts.spend_anomalies).
with

days as (
    select cluster_id, day, currency, billed_hours, billed_gpus, cost_per_gpu_hour,
    from intermediate.cluster_daily
),

final as (
    select
        today.cluster_id,
        today.day,
        today.currency,
        coalesce(today.billed_hours, 0) as billed_hours,
        coalesce(before.billed_hours, 0) as billed_hours_before,
        today.billed_gpus,
        before.billed_gpus as billed_gpus_before,
        today.cost_per_gpu_hour,
        before.cost_per_gpu_hour as cost_per_gpu_hour_before,
        case
            when coalesce(today.billed_hours, 0) > coalesce(before.billed_hours, 0)
                then 'started'
            when coalesce(today.billed_hours, 0) < coalesce(before.billed_hours, 0)
                then 'stopped'
            when today.billed_gpus <> before.billed_gpus then 'resize'
            -- a rate differs by more than its rounding (0.1 %)
            when abs(today.cost_per_gpu_hour - before.cost_per_gpu_hour)
                > 0.001 * abs(before.cost_per_gpu_hour) then 'rate_change'
            else 'usage'
        end as cause,
    from days as today
    left join days as before
        on before.cluster_id = today.cluster_id
        and before.currency = today.currency
        and before.day = today.day - 1
)

select * from final
