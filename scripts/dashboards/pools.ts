/**
 * The "Spillway pools" dashboard: replicas, the quantization ladder, queues, slots and decode speed of
 * each pool, for the people who size and tune pools. Worker series need a `pool` label, which the
 * Prometheus scrape configuration adds (docs/observability.md).
 */
import { DashboardBuilder, DashboardCursorSync } from "@grafana/grafana-foundation-sdk/dashboard";
import * as units from "@grafana/grafana-foundation-sdk/units";

import { datasourceVariable, poolVariable, row, timeseries, tokensPerSecond } from "./panels.ts";

export const poolsUid = "spillway-pools";

const rateWindow = "$__rate_interval";
const pool = 'pool=~"$pool"';

function quantile(q: number, histogram: string): string {
  return `histogram_quantile(${q}, sum by (pool, le) (rate(${histogram}_bucket{${pool}}[${rateWindow}])))`;
}

export function poolsDashboard(): DashboardBuilder {
  const dashboard = new DashboardBuilder("Spillway pools")
    .uid(poolsUid)
    .description("Replicas, quantization ladder, queues, slots and decode speed of Spillway's pools.")
    .tags(["spillway"])
    .time({ from: "now-1h", to: "now" })
    .refresh("30s")
    .tooltip(DashboardCursorSync.Crosshair)
    .withVariable(datasourceVariable())
    .withVariable(poolVariable());

  dashboard
    .withRow(row("Replicas and ladder"))
    .withPanel(timeseries({
      title: "Replicas by state",
      description: "Replicas of each pool by state: starting (loading a model), ready, draining (finishing requests before it stops) and failed (waiting to restart).",
      unit: units.Short,
      stepped: true,
      min: 0,
      queries: [{ expr: `max by (pool, state) (spillway_pool_replicas{${pool}})`, legend: "{{pool}} {{state}}" }],
    }))
    .withPanel(timeseries({
      title: "Variant per replica (bits per weight)",
      description: "Bits per weight of the variant each replica serves: Q4_K_M is 4, Q8_0 is 8, F16 is 16; 0 for a quantization Spillway does not know. A drop is a step down the ladder.",
      unit: units.NoUnit,
      stepped: true,
      min: 0,
      queries: [{ expr: `max by (pool, replica) (spillway_replica_quant_bits{${pool}})`, legend: "{{replica}}" }],
    }))
    .withPanel(timeseries({
      title: "Ladder steps",
      description: "Replica moves along the pool's quantization ladder per interval: down to a faster, lower-quality variant under load, up again when load passes.",
      unit: units.Short,
      bars: true,
      min: 0,
      queries: [{ expr: `sum by (pool, direction) (increase(spillway_ladder_steps_total{${pool}}[${rateWindow}]))`, legend: "{{pool}} {{direction}}" }],
    }))
    .withPanel(timeseries({
      title: "Workers per variant",
      description: "Worker processes or pods by the variant they serve, from each worker's own spillway_worker_model_info.",
      unit: units.Short,
      stack: true,
      stepped: true,
      min: 0,
      queries: [{ expr: `count by (pool, quant) (spillway_worker_model_info{${pool}})`, legend: "{{pool}} {{quant}}" }],
    }))
    .withPanel(timeseries({
      title: "Variant swaps",
      description: "Completed variant swaps in the workers per interval, by the variant served before and after, and the workers in the middle of one now. A swap loads the new variant while the old one finishes its requests.",
      unit: units.Short,
      bars: true,
      min: 0,
      queries: [
        { expr: `sum by (pool, from, to) (increase(spillway_worker_variant_swaps_total{${pool}}[${rateWindow}]))`, legend: "{{pool}} {{from}} to {{to}}" },
        { expr: `sum by (pool) (spillway_worker_swap_in_progress{${pool}})`, legend: "{{pool}} swapping now" },
      ],
    }))
    .withPanel(timeseries({
      title: "Model load time",
      description: "Seconds each worker's last model load took, from resolving the GGUF file to a ready context. A cold start of a new replica takes at least this long.",
      unit: units.Seconds,
      min: 0,
      queries: [{ expr: `max by (pool, instance) (spillway_worker_model_load_seconds{${pool}})`, legend: "{{pool}} {{instance}}" }],
    }));

  dashboard
    .withRow(row("Queues and slots"))
    .withPanel(timeseries({
      title: "Queue depth",
      description: "Requests waiting for a local slot: in the gateway's per-pool queue (which can overflow to Gemini) and in the workers' own queues (normally empty, because the gateway never sends a replica more requests than it has slots).",
      unit: units.Short,
      min: 0,
      queries: [
        { expr: `sum by (pool) (spillway_queue_depth{${pool}})`, legend: "{{pool}} gateway" },
        { expr: `sum by (pool) (spillway_worker_queue_depth{${pool}})`, legend: "{{pool}} workers" },
      ],
    }))
    .withPanel(timeseries({
      title: "Slots busy",
      description: "Slots (parallel sequences) decoding a request, against all slots of the pool's ready workers.",
      unit: units.Short,
      min: 0,
      queries: [
        { expr: `sum by (pool) (spillway_worker_slots{${pool}, state="busy"})`, legend: "{{pool}} busy" },
        { expr: `sum by (pool) (spillway_worker_slots{${pool}})`, legend: "{{pool}} total" },
      ],
    }))
    .withPanel(timeseries({
      title: "Queue wait",
      description: "Median and 95th percentile of the time a request waited in the gateway for a local slot before it went to a replica or overflowed.",
      unit: units.Seconds,
      min: 0,
      queries: [
        { expr: quantile(0.5, "spillway_queue_wait_seconds"), legend: "{{pool}} p50" },
        { expr: quantile(0.95, "spillway_queue_wait_seconds"), legend: "{{pool}} p95" },
      ],
    }))
    .withPanel(timeseries({
      title: "KV cache usage",
      description: "Fraction of each worker's KV cache cells that hold tokens. Near 1, long prompts and replies compete for context.",
      unit: units.PercentUnit,
      min: 0,
      queries: [{ expr: `max by (pool, instance) (spillway_worker_kv_cache_usage_ratio{${pool}})`, legend: "{{pool}} {{instance}}" }],
    }));

  dashboard
    .withRow(row("Speed"))
    .withPanel(timeseries({
      title: "Decode rate per variant",
      description: "Decode speed of one request after its first token, a moving average per variant, averaged over the pool's workers. The ladder steps down only to a variant that decodes faster by autoscaling.minStepSpeedup.",
      unit: tokensPerSecond,
      min: 0,
      queries: [{ expr: `avg by (pool, quant) (spillway_worker_decode_tokens_per_second{${pool}})`, legend: "{{pool}} {{quant}}" }],
    }))
    .withPanel(timeseries({
      title: "Time per output token",
      description: "Median and 95th percentile of each request's mean decode time per output token after the first, measured in the workers.",
      unit: units.Seconds,
      min: 0,
      queries: [
        { expr: quantile(0.5, "spillway_worker_time_per_output_token_seconds"), legend: "{{pool}} p50" },
        { expr: quantile(0.95, "spillway_worker_time_per_output_token_seconds"), legend: "{{pool}} p95" },
      ],
    }))
    .withPanel(timeseries({
      title: "Worker tokens per second",
      description: "Tokens the pool's workers process per second, by kind: prompt tokens evaluated and completion tokens generated.",
      unit: tokensPerSecond,
      min: 0,
      queries: [{ expr: `sum by (pool, kind) (rate(spillway_worker_tokens_total{${pool}}[${rateWindow}]))`, legend: "{{pool}} {{kind}}" }],
    }))
    .withPanel(timeseries({
      title: "Worker time to first token p95",
      description: "95th percentile of the time from a worker receiving a request to its first decoded output. The gateway's time to first token adds its own queue wait and the relay.",
      unit: units.Seconds,
      min: 0,
      queries: [{ expr: quantile(0.95, "spillway_worker_time_to_first_token_seconds"), legend: "{{pool}}" }],
    }))
    .withPanel(timeseries({
      title: "Worker responses per second by status",
      description: "Chat completion responses the workers sent, by HTTP status code. The gateway sends a request that fails before its first byte once more, to another replica or to Gemini, so not every error here reaches a client.",
      unit: units.RequestsPerSecond,
      min: 0,
      width: 24,
      queries: [{ expr: `sum by (pool, code) (rate(spillway_worker_requests_total{${pool}}[${rateWindow}]))`, legend: "{{pool}} {{code}}" }],
    }));

  return dashboard;
}
