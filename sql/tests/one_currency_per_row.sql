-- Every money row names exactly one currency, an ISO 4217 code.
with

currencies as (
    select 'idle_waste_daily' as mart, cluster_id as id, currency from marts.idle_waste_daily
    union all
    select 'fleet_daily', cast(day as varchar), currency from marts.fleet_daily
    union all
    select 'projection_drift', cluster_id, currency from marts.projection_drift
    union all
    select 'recommendations', cluster_id, currency from marts.recommendations
    union all
    select 'clusters', cluster_id, currency from marts.clusters
),

final as (
    select *
    from currencies
    where currency is null or not regexp_full_match(currency, '[A-Z]{3}')
)

select * from final
