-- One row per UTC month, project and currency, from every bucket as the store holds it now:
-- what marts.project_monthly shows for an open month (a closed one shows what was frozen).
with

buckets as (
    select * from intermediate.buckets
),

cluster_projects as (
    select * from intermediate.cluster_projects
),

final as (
    select
        cast(date_trunc('month', buckets.day) as date) as month,
        cluster_projects.project_id,
        buckets.currency,
        sum(buckets.cost) as cost,
        sum(coalesce(buckets.gpu_cost, 0)) as gpu_cost,
        sum(buckets.gpu_hours) as gpu_hours,
        sum(buckets.idle_gpu_hours) as idle_gpu_hours,
        sum(buckets.idle_cost) as idle_cost,
        sum(buckets.unused_capacity_cost) as unused_capacity_cost,
        min(buckets.bucket_at) as first_data_at,
        max(buckets.bucket_end_at) as last_data_at,
    from buckets
    left join cluster_projects on cluster_projects.cluster_id = buckets.cluster_id
    group by all
)

select * from final
