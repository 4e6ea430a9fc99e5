-- materialized: view
-- One row per cluster, UTC day, currency and cost component (gpu, cpu, memory, storage,
-- network, or one the provider adds; `cluster` when a snapshot has no breakdown): what the
-- FOCUS export and the report's per-cluster spend show. The costs are
-- intermediate.cluster_component_costs (each bucket's cost split by the breakdown of the
-- snapshot that priced it; the parts of a day add up exactly to its bucket costs), with the
-- cluster's current configuration. A view: the configuration changes every night, the history
-- of costs does not. quantity: GPU-hours for `gpu` (as idle_waste_daily), else billed hours.
with

costs as (
    select * from intermediate.cluster_component_costs
),

configuration as (
    select * from marts.cluster_configuration
),

final as (
    select
        costs.cluster_id,
        costs.day,
        costs.currency,
        costs.component,
        costs.cost,
        costs.quantity,
        costs.unit,
        configuration.name,
        configuration.status,
        configuration.region,
        configuration.availability_zone,
        configuration.project_id,
        configuration.project_name,
        configuration.gpu_type,
        configuration.gpu_count,
        configuration.template_name,
    from costs
    left join configuration on configuration.cluster_id = costs.cluster_id
)

select * from final
