/**
 * The "Spillway overview" dashboard: traffic, latency, overflow and money, for everyone who watches
 * Spillway rather than operates it.
 */
import { DashboardBuilder, DashboardCursorSync } from "@grafana/grafana-foundation-sdk/dashboard";
import * as units from "@grafana/grafana-foundation-sdk/units";

import { datasourceVariable, poolVariable, row, stat, tenantVariable, timeseries, tokensPerSecond } from "./panels.ts";

export const overviewUid = "spillway-overview";

const rateWindow = "$__rate_interval";
const pool = 'pool=~"$pool"';
const poolAndTenant = 'pool=~"$pool", tenant=~"$tenant"';

function quantile(q: number, histogram: string, by: string): string {
  return `histogram_quantile(${q}, sum by (${by}, le) (rate(${histogram}_bucket{${pool}}[${rateWindow}])))`;
}

export function overviewDashboard(): DashboardBuilder {
  const dashboard = new DashboardBuilder("Spillway overview")
    .uid(overviewUid)
    .description("Requests, tokens, latency, overflow to Gemini and spend of a Spillway gateway.")
    .tags(["spillway"])
    .time({ from: "now-1h", to: "now" })
    .refresh("30s")
    .tooltip(DashboardCursorSync.Crosshair)
    .withVariable(datasourceVariable())
    .withVariable(poolVariable())
    .withVariable(tenantVariable());

  dashboard
    .withRow(row("Traffic"))
    .withPanel(timeseries({
      title: "Requests per second by backend",
      description: "Chat completion responses per second, by the backend that served them: local replicas or Gemini (overflow). Counted when a response ends, whatever its status.",
      unit: units.RequestsPerSecond,
      queries: [{ expr: `sum by (backend) (rate(spillway_requests_total{${pool}}[${rateWindow}]))`, legend: "{{backend}}" }],
    }))
    .withPanel(timeseries({
      title: "Tokens per second by backend",
      description: "Metered tokens per second, prompt and completion, by backend. Local tokens come from the workers' usage, Gemini tokens from Gemini's usage, where completion includes thinking tokens.",
      unit: tokensPerSecond,
      queries: [{ expr: `sum by (backend, kind) (rate(spillway_tokens_total{${pool}}[${rateWindow}]))`, legend: "{{backend}} {{kind}}" }],
    }))
    .withPanel(timeseries({
      title: "Time to first token per pool",
      description: "Median and 95th percentile of the time from receiving a request to its first content byte, queue wait included, over both backends. Compare with the pool's slo.timeToFirstTokenSeconds.",
      unit: units.Seconds,
      min: 0,
      queries: [
        { expr: quantile(0.5, "spillway_time_to_first_token_seconds", "pool"), legend: "{{pool}} p50" },
        { expr: quantile(0.95, "spillway_time_to_first_token_seconds", "pool"), legend: "{{pool}} p95" },
      ],
    }))
    .withPanel(timeseries({
      title: "Request duration p95 by backend",
      description: "95th percentile of the time from receiving a request to its last byte, per pool and backend.",
      unit: units.Seconds,
      min: 0,
      queries: [{ expr: quantile(0.95, "spillway_request_duration_seconds", "pool, backend"), legend: "{{pool}} {{backend}}" }],
    }));

  dashboard
    .withRow(row("Overflow"))
    .withPanel(timeseries({
      title: "Overflow share per pool",
      description: "Requests sent to Gemini instead of a local replica, as a share of the pool's responses.",
      unit: units.PercentUnit,
      min: 0,
      queries: [{
        expr: `sum by (pool) (rate(spillway_overflow_total{${pool}}[${rateWindow}])) / sum by (pool) (rate(spillway_requests_total{${pool}}[${rateWindow}]))`,
        legend: "{{pool}}",
      }],
    }))
    .withPanel(timeseries({
      title: "Overflow reasons",
      description: "Overflowed requests per second by reason: saturated (no slot in time), cold_start (no replica ready), quality_floor (no replica at the request's rung), context_length (prompt longer than the pool's context), local_error (the replica failed before the first byte).",
      unit: units.RequestsPerSecond,
      stack: true,
      queries: [{ expr: `sum by (reason) (rate(spillway_overflow_total{${pool}}[${rateWindow}]))`, legend: "{{reason}}" }],
    }))
    .withPanel(timeseries({
      title: "Upstream errors per second",
      description: "Failed calls from the gateway to a backend, by backend and HTTP status: a Gemini call that failed after its retries, a replica that failed before its first byte (the request then tries elsewhere), or a stream cut mid-way.",
      unit: units.RequestsPerSecond,
      queries: [{ expr: `sum by (backend, code) (rate(spillway_upstream_errors_total[${rateWindow}]))`, legend: "{{backend}} {{code}}" }],
    }))
    .withPanel(timeseries({
      title: "Circuit breaker open",
      description: "1 while a backend's circuit breaker is open and the gateway skips it (no overflow to Gemini while it is), else 0. The highest value over the gateway's replicas.",
      unit: units.NoUnit,
      stepped: true,
      min: 0,
      queries: [{ expr: "max by (backend) (spillway_circuit_open)", legend: "{{backend}}" }],
    }));

  dashboard
    .withRow(row("Spend"))
    .withPanel(timeseries({
      title: "Spend per hour by backend",
      description: "USD per hour at the current rate: Gemini charges by its price table, local spend is replica time (costPerReplicaHourUsd) attributed to tenants by their local tokens.",
      unit: units.Dollars,
      min: 0,
      queries: [{ expr: `sum by (backend) (rate(spillway_spend_usd_total{${poolAndTenant}}[${rateWindow}])) * 3600`, legend: "{{backend}}" }],
    }))
    .withPanel(timeseries({
      title: "Spend per hour by tenant",
      description: "USD per hour at the current rate, per tenant (API key owner), both backends. Replica time without any local tokens is billed to the tenant idle, so the tenants add up to the bill.",
      unit: units.Dollars,
      min: 0,
      stack: true,
      queries: [{ expr: `sum by (tenant) (rate(spillway_spend_usd_total{${poolAndTenant}}[${rateWindow}])) * 3600`, legend: "{{tenant}}" }],
    }))
    .withPanel(timeseries({
      title: "USD per 1M tokens, local vs Gemini",
      description: "Spend divided by tokens (prompt and completion), per million, for each backend, next to what Gemini's prices give for all tokens (gemini-equivalent). All tenants, because tokens are not counted per tenant.",
      unit: units.Dollars,
      min: 0,
      queries: [
        {
          expr: `sum by (backend) (rate(spillway_spend_usd_total{${pool}}[${rateWindow}])) / sum by (backend) (rate(spillway_tokens_total{${pool}}[${rateWindow}])) * 1e6`,
          legend: "{{backend}}",
        },
        {
          expr: `sum(rate(spillway_gemini_equivalent_usd_total{${pool}}[${rateWindow}])) / sum(rate(spillway_tokens_total{${pool}}[${rateWindow}])) * 1e6`,
          legend: "gemini-equivalent",
        },
      ],
    }))
    .withPanel(timeseries({
      title: "Gemini-equivalent vs actual spend per hour",
      description: "What all metered tokens, local and Gemini, would have cost on Gemini, next to what they cost: Gemini charges plus replica time. All tenants.",
      unit: units.Dollars,
      min: 0,
      queries: [
        { expr: `sum(rate(spillway_gemini_equivalent_usd_total{${pool}}[${rateWindow}])) * 3600`, legend: "gemini-equivalent" },
        { expr: `sum(rate(spillway_spend_usd_total{${pool}}[${rateWindow}])) * 3600`, legend: "actual" },
      ],
    }))
    .withPanel(stat({
      title: "Budget remaining",
      description: "USD each tenant with a budget may still spend in its tightest period (day or month); negative once overspent. The lowest value over the gateway's replicas.",
      unit: units.Dollars,
      width: 24,
      height: 5,
      queries: [{ expr: 'min by (tenant) (spillway_budget_remaining_usd{tenant=~"$tenant"})', legend: "{{tenant}}" }],
    }));

  return dashboard;
}
