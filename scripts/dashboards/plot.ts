/**
 * Draws dashboard panels as an SVG grid of time series charts, in the spirit of Grafana's time series
 * panel, for pictures in the docs. Only what those pictures need: lines, steps, stacking, a y axis
 * formatted in the panel's unit, clock times in UTC and a legend.
 */

/** One series: points as [unix seconds, value]; NaN values leave a gap. */
export interface PlotSeries {
  label: string;
  points: Array<[number, number]>;
}

export interface PlotPanel {
  title: string;
  /** A Grafana unit id as the dashboards use them: reqps, s, currencyUSD, percentunit, none, short or "suffix: …". */
  unit: string;
  series: PlotSeries[];
  stacked: boolean;
  stepped: boolean;
}

const panelWidth = 600;
const panelHeight = 310;
const gap = 16;
const headerHeight = 64;
const plotInset = { left: 78, right: 16, top: 38, bottom: 64 };
// Grafana's classic palette, in its order.
const palette = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642", "#CCA300"];

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function trimNumber(value: number, digits: number): string {
  return Number(value.toFixed(digits)).toString();
}

/** Formats a value the way the panel's unit reads in Grafana, shortened for an axis label. */
export function formatValue(value: number, unit: string, step = Math.abs(value)): string {
  const digits = step === 0 ? 2 : Math.max(0, Math.min(6, -Math.floor(Math.log10(step)) + 1));
  if (unit === "percentunit") return `${trimNumber(value * 100, Math.max(0, digits - 2))}%`;
  if (unit === "currencyUSD") return `$${trimNumber(value, digits)}`;
  if (unit === "s") {
    if (Math.abs(step) < 1 && value !== 0 && Math.abs(value) < 1) return `${trimNumber(value * 1000, Math.max(0, digits - 3))} ms`;
    return `${trimNumber(value, digits)} s`;
  }
  const suffix = unit === "reqps" ? " req/s" : unit.startsWith("suffix:") ? unit.slice("suffix:".length) : "";
  if (Math.abs(value) >= 1000 && step >= 100) return `${trimNumber(value / 1000, Math.max(0, digits - 3))}k${suffix}`;
  return `${trimNumber(value, digits)}${suffix}`;
}

/** Returns about `count` round tick values, the first at or below `min` and the last at or above `max`. */
function ticks(min: number, max: number, count: number): { values: number[]; step: number } {
  const span = max - min || Math.abs(max) || 1;
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((factor) => factor * magnitude).find((candidate) => candidate >= raw) ?? raw;
  const first = Math.floor(min / step);
  const last = Math.max(first + 1, Math.ceil(max / step - 1e-9));
  const values: number[] = [];
  for (let index = first; index <= last; index += 1) values.push(Number((index * step).toPrecision(12)));
  return { values, step };
}

/** A point to draw: time, the top of the series and the bottom its area fills down to. */
type DrawnPoint = [time: number, top: number, base: number];

interface DrawnSeries {
  label: string;
  points: DrawnPoint[];
}

/**
 * Adds each series onto the ones before it at the same timestamp, as Grafana's normal stacking does.
 * A stacked area fills down to the series below it, an unstacked one down to `floor`.
 */
function layOut(series: PlotSeries[], stacked: boolean, floor: number): DrawnSeries[] {
  const totals = new Map<number, number>();
  return series.map((entry) => ({
    label: entry.label,
    points: entry.points.map(([time, value]): DrawnPoint => {
      if (!stacked) return [time, value, floor];
      const base = totals.get(time) ?? 0;
      const top = base + (Number.isFinite(value) ? value : 0);
      totals.set(time, top);
      return [time, top, base];
    }),
  }));
}

function clock(seconds: number): string {
  return new Date(seconds * 1000).toISOString().slice(11, 19);
}

/** Splits points into runs of finite values, so a NaN leaves a gap instead of a line to zero. */
function finiteRuns(points: DrawnPoint[]): DrawnPoint[][] {
  const runs: DrawnPoint[][] = [[]];
  for (const point of points) {
    if (Number.isFinite(point[1])) runs.at(-1)!.push(point);
    else if (runs.at(-1)!.length > 0) runs.push([]);
  }
  return runs.filter((run) => run.length > 0);
}

/**
 * Builds path commands through [x, y] screen points. A stepped path keeps each value until the next
 * point in time. With `backwards`, the points run from the latest to the earliest, as on the way back
 * of an area.
 */
function pathOf(points: Array<[number, number]>, stepped: boolean, backwards = false): string {
  return points
    .map(([px, py], index) => {
      const previous = points[index - 1];
      let corner = "";
      if (stepped && previous !== undefined) {
        const [cornerX, cornerY] = backwards ? [previous[0], py] : [px, previous[1]];
        corner = `L${cornerX.toFixed(1)},${cornerY.toFixed(1)} `;
      }
      return `${corner}${index === 0 && !backwards ? "M" : "L"}${px.toFixed(1)},${py.toFixed(1)}`;
    })
    .join(" ");
}

function legendItems(series: Array<{ label: string }>, left: number, top: number, width: number): string {
  const parts: string[] = [];
  let x = left;
  let y = top;
  series.forEach((entry, index) => {
    const label = escapeXml(entry.label);
    const itemWidth = 22 + entry.label.length * 6.6;
    if (x + itemWidth > left + width && x > left) {
      x = left;
      y += 16;
    }
    parts.push(`<rect x="${x}" y="${y - 8}" width="14" height="4" fill="${palette[index % palette.length]}"/>`);
    parts.push(`<text x="${x + 19}" y="${y - 3}" class="legend">${label}</text>`);
    x += itemWidth + 10;
  });
  return parts.join("");
}

function panelSvg(panel: PlotPanel, left: number, top: number, start: number, end: number): string {
  const series = layOut(panel.series, panel.stacked, 0);
  const values = series.flatMap((entry) => entry.points.map(([, top]) => top)).filter(Number.isFinite);
  const dataMin = Math.min(0, ...values);
  const dataMax = Math.max(...values, dataMin + Number.EPSILON);
  const { values: yTicks, step } = ticks(dataMin, dataMax, 4);
  const yMin = yTicks[0] ?? 0;
  const yMax = yTicks.at(-1) ?? 1;
  const plotLeft = left + plotInset.left;
  const plotTop = top + plotInset.top;
  const plotWidth = panelWidth - plotInset.left - plotInset.right;
  const plotHeight = panelHeight - plotInset.top - plotInset.bottom;
  const x = (time: number) => plotLeft + ((time - start) / Math.max(1, end - start)) * plotWidth;
  const y = (value: number) => plotTop + plotHeight - ((value - yMin) / (yMax - yMin || 1)) * plotHeight;

  const clip = `clip-${left}-${top}`;
  const parts = [
    `<clipPath id="${clip}"><rect x="${plotLeft}" y="${plotTop - 2}" width="${plotWidth}" height="${plotHeight + 4}"/></clipPath>`,
    `<rect x="${left}" y="${top}" width="${panelWidth}" height="${panelHeight}" rx="4" class="panel"/>`,
    `<text x="${left + 12}" y="${top + 22}" class="title">${escapeXml(panel.title)}</text>`,
  ];
  for (const value of yTicks) {
    parts.push(`<line x1="${plotLeft}" x2="${plotLeft + plotWidth}" y1="${y(value).toFixed(1)}" y2="${y(value).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${plotLeft - 8}" y="${(y(value) + 4).toFixed(1)}" class="axis" text-anchor="end">${escapeXml(formatValue(value, panel.unit, step))}</text>`);
  }
  const timeTicks = ticks(start, end, 5).values.filter((time) => time >= start && time <= end);
  for (const time of timeTicks) {
    parts.push(`<text x="${x(time).toFixed(1)}" y="${plotTop + plotHeight + 18}" class="axis" text-anchor="middle">${clock(time)}</text>`);
  }
  parts.push(`<g clip-path="url(#${clip})">`);
  series.forEach((entry, index) => {
    const color = palette[index % palette.length];
    for (const run of finiteRuns(entry.points)) {
      const line = pathOf(run.map(([time, top]) => [x(time), y(top)]), panel.stepped);
      // The area goes along the tops, then back along the bases.
      const back = pathOf(run.map(([time, , base]): [number, number] => [x(time), y(base)]).reverse(), panel.stepped, true);
      const area = `${line} ${back} Z`;
      parts.push(`<path d="${area}" fill="${color}" fill-opacity="${panel.stacked ? 0.35 : 0.1}" stroke="none"/>`);
      parts.push(`<path d="${line}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
    }
  });
  parts.push("</g>");
  if (series.length === 0) parts.push(`<text x="${plotLeft + plotWidth / 2}" y="${plotTop + plotHeight / 2}" class="axis" text-anchor="middle">No data</text>`);
  parts.push(legendItems(series, left + 16, plotTop + plotHeight + 42, panelWidth - 32));
  return parts.join("\n");
}

/** Renders panels in a grid of `columns`, under a heading, as one SVG document. */
export function renderPanelGrid(heading: string, caption: string, panels: PlotPanel[], start: number, end: number, columns = 3): string {
  const rows = Math.ceil(panels.length / columns);
  const width = columns * panelWidth + (columns + 1) * gap;
  const height = headerHeight + rows * (panelHeight + gap) + gap;
  const body = panels.map((panel, index) => {
    const left = gap + (index % columns) * (panelWidth + gap);
    const top = headerHeight + Math.floor(index / columns) * (panelHeight + gap);
    return panelSvg(panel, left, top, start, end);
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    "<style>",
    "text { font-family: 'DejaVu Sans', sans-serif; fill: #24292f; }",
    ".heading { font-size: 22px; font-weight: bold; } .caption { font-size: 13px; fill: #57606a; }",
    ".title { font-size: 15px; font-weight: bold; } .axis { font-size: 11px; fill: #57606a; } .legend { font-size: 11px; }",
    ".panel { fill: #ffffff; stroke: #d0d7de; } .grid { stroke: #eaeef2; stroke-width: 1; }",
    "</style>",
    `<rect width="${width}" height="${height}" fill="#f6f8fa"/>`,
    `<text x="${gap}" y="30" class="heading">${escapeXml(heading)}</text>`,
    `<text x="${gap}" y="50" class="caption">${escapeXml(caption)}</text>`,
    ...body,
    "</svg>",
  ].join("\n");
}
