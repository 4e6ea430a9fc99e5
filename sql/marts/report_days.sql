-- One row per UTC day with buckets: how many distinct hours the fleet's buckets cover, and
-- whether that is the whole day. The report's period is made of complete days: a snapshot at
-- 03:00 covers three hours of its own day, and a chart ending there would show a false cliff.
with

points as (
    select * from staging.metric_points
),

final as (
    select
        day,
        count(distinct date_trunc('hour', bucket_at)) as bucket_hours,
        count(distinct date_trunc('hour', bucket_at)) >= 24 as is_complete,
    from points
    group by day
)

select * from final
