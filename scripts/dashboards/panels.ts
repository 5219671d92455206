/**
 * Building blocks shared by Spillway's Grafana dashboards: the template variables, Prometheus queries
 * and the panel kinds the dashboards use, so both dashboards read the same way.
 */
import {
  BigValueGraphMode,
  GraphDrawStyle,
  LegendDisplayMode,
  LegendPlacement,
  LineInterpolation,
  ReduceDataOptionsBuilder,
  SortOrder,
  StackingConfigBuilder,
  StackingMode,
  TooltipDisplayMode,
  VizLegendOptionsBuilder,
  VizTooltipOptionsBuilder,
} from "@grafana/grafana-foundation-sdk/common";
import {
  DatasourceVariableBuilder,
  QueryVariableBuilder,
  RowBuilder,
  VariableRefresh,
  VariableSort,
  type DataSourceRef,
} from "@grafana/grafana-foundation-sdk/dashboard";
import { DataqueryBuilder } from "@grafana/grafana-foundation-sdk/prometheus";
import { PanelBuilder as StatPanelBuilder } from "@grafana/grafana-foundation-sdk/stat";
import { PanelBuilder as TimeseriesPanelBuilder } from "@grafana/grafana-foundation-sdk/timeseries";

/** Every panel and variable queries the Prometheus data source the user picks in `$datasource`. */
export const datasource: DataSourceRef = { type: "prometheus", uid: "${datasource}" };

/** Grafana's custom-unit syntax: the value followed by this suffix. */
export const tokensPerSecond = "suffix: tok/s";

/** One PromQL expression of a panel and the legend of each series it returns (Grafana's `{{label}}` syntax). */
export interface Query {
  expr: string;
  legend: string;
}

export interface PanelSpec {
  title: string;
  /** Shown in the panel's info tooltip: what the numbers mean and where they come from. */
  description: string;
  /** A Grafana unit id, such as `reqps`, `s`, `currencyUSD` or `percentunit`. */
  unit: string;
  queries: Query[];
  /** Width in grid columns out of 24; default 12. */
  width?: number;
  /** Height in grid rows; default 8. */
  height?: number;
}

export interface TimeseriesSpec extends PanelSpec {
  /** Stack the series, for parts of a whole such as overflow reasons. */
  stack?: boolean;
  /** Draw steps instead of lines, for values that jump, such as bits per weight. */
  stepped?: boolean;
  /** Draw bars, for counts of rare events per interval. */
  bars?: boolean;
  /** Lower end of the y axis; unset lets Grafana choose. */
  min?: number;
}

/** Builds the data source variable, which every panel and variable query follows. */
export function datasourceVariable(): DatasourceVariableBuilder {
  return new DatasourceVariableBuilder("datasource")
    .label("Data source")
    .description("The Prometheus data source that scrapes the Spillway gateway and its workers.")
    .type("prometheus");
}

/**
 * Builds a multi-value variable over the values of `label` on `metric`. "All" substitutes `.*`, so
 * queries match with `label=~"$name"` whether one, several or all values are chosen.
 */
export function labelVariable(name: string, label: string, metric: string, description: string): QueryVariableBuilder {
  return new QueryVariableBuilder(name)
    .label(label)
    .description(description)
    .datasource(datasource)
    .query(`label_values(${metric}, ${name})`)
    .refresh(VariableRefresh.OnTimeRangeChanged)
    .sort(VariableSort.AlphabeticalAsc)
    .multi(true)
    .includeAll(true)
    .allValue(".*")
    .current({ selected: true, text: "All", value: "$__all" });
}

export function poolVariable(): QueryVariableBuilder {
  return labelVariable("pool", "Pool", "spillway_pool_replicas", "Pools to show: one model served under one or more names, with its ladder and replicas.");
}

export function tenantVariable(): QueryVariableBuilder {
  return labelVariable("tenant", "Tenant", "spillway_spend_usd_total", "Tenants to show in spend and budget panels: the owner of an API key, or idle for replica time without tokens.");
}

export function row(title: string): RowBuilder {
  return new RowBuilder(title);
}

function targets(queries: Query[]): DataqueryBuilder[] {
  return queries.map((query, index) =>
    new DataqueryBuilder()
      .expr(query.expr)
      .legendFormat(query.legend)
      .range()
      .refId(String.fromCharCode(65 + index))
      .datasource(datasource),
  );
}

function legend(): VizLegendOptionsBuilder {
  return new VizLegendOptionsBuilder().displayMode(LegendDisplayMode.List).placement(LegendPlacement.Bottom).showLegend(true);
}

export function timeseries(spec: TimeseriesSpec): TimeseriesPanelBuilder {
  const panel = new TimeseriesPanelBuilder()
    .title(spec.title)
    .description(spec.description)
    .datasource(datasource)
    .targets(targets(spec.queries))
    .unit(spec.unit)
    .span(spec.width ?? 12)
    .height(spec.height ?? 8)
    .legend(legend())
    // Every series at the hovered time, largest first, so a tooltip compares backends or pools at a glance.
    .tooltip(new VizTooltipOptionsBuilder().mode(TooltipDisplayMode.Multi).sort(SortOrder.Descending))
    .fillOpacity(spec.stack === true || spec.bars === true ? 40 : 10);
  if (spec.stack === true) panel.stacking(new StackingConfigBuilder().mode(StackingMode.Normal));
  if (spec.stepped === true) panel.lineInterpolation(LineInterpolation.StepAfter);
  if (spec.bars === true) panel.drawStyle(GraphDrawStyle.Bars);
  if (spec.min !== undefined) panel.min(spec.min);
  return panel;
}

/** Builds a stat panel: the current value of each series, such as a tenant's remaining budget, over its trend. */
export function stat(spec: PanelSpec): StatPanelBuilder {
  return new StatPanelBuilder()
    .title(spec.title)
    .description(spec.description)
    .datasource(datasource)
    .targets(targets(spec.queries))
    .unit(spec.unit)
    .span(spec.width ?? 6)
    .height(spec.height ?? 8)
    .graphMode(BigValueGraphMode.Area)
    .reduceOptions(new ReduceDataOptionsBuilder().calcs(["lastNotNull"]).values(false));
}
