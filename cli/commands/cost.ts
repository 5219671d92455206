import { parseArgs } from "node:util";

import type { UsageGroup, UsageRow } from "../../controller/metering/types.ts";
import { parseTimestamp, usageGroups, type UsageResponse } from "../../controller/metering/usage-endpoint.ts";
import { UsageError } from "../options.ts";

const help = `Usage: spillway cost [options]

Prints requests, tokens, spend and the gemini-equivalent (what the same tokens would have cost on
Gemini) from a running gateway, one row per tenant, pool or backend.

Options:
  --url <url>             Gateway base URL (default http://127.0.0.1:8080)
  --group-by <group>      Row key: ${usageGroups.join(", ")} (default tenant)
  --from <time>           Start of the range, Unix seconds or ISO 8601 such as 2026-03-01
                          (default: the start of the current UTC day)
  --to <time>             End of the range, exclusive, same forms (default: now)
  --admin-key-env <name>  Environment variable with the admin key, sent as a Bearer token
                          (default SPILLWAY_ADMIN_KEY; no key is sent when it is unset)
  --help                  Show this help
`;

export interface CostOptions {
  url: string;
  groupBy: UsageGroup;
  from: string | undefined;
  to: string | undefined;
  adminKeyEnv: string;
}

/** Parses `spillway cost` arguments. Returns undefined after printing the help for --help. */
export function parseCostOptions(args: string[]): CostOptions | undefined {
  const values = parseCommandLine(args);
  if (values.help) {
    process.stdout.write(help);
    return undefined;
  }

  const url = values.url;
  if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) {
    throw new UsageError(`Invalid value for --url: '${url}'. Expected an http or https URL such as http://127.0.0.1:8080.`);
  }
  const groupBy = values["group-by"];
  if (!usageGroups.some((group) => group === groupBy)) {
    throw new UsageError(`Invalid value for --group-by: '${groupBy}'. Expected one of ${usageGroups.join(", ")}.`);
  }
  for (const option of ["from", "to"] as const) {
    const value = values[option];
    if (value !== undefined && parseTimestamp(value) === undefined) {
      throw new UsageError(`Invalid value for --${option}: '${value}'. Expected Unix seconds or an ISO 8601 date or time, such as 2026-03-01.`);
    }
  }
  return { url, groupBy: groupBy as UsageGroup, from: values.from, to: values.to, adminKeyEnv: values["admin-key-env"] };
}

/** Runs `spillway cost`: fetches the usage summary and prints it as a table. Sets exit code 1 when the request fails. */
export async function runCostCommand(args: string[]): Promise<void> {
  const options = parseCostOptions(args);
  if (options === undefined) return;

  const result = await fetchUsage(options);
  if (typeof result === "string") {
    process.stderr.write(`spillway cost: ${result}\n`);
    process.exitCode = 1;
    return;
  }
  process.stdout.write(formatCostTable(result));
}

/** Requests the usage summary and returns the response body, or an error message to print. */
export async function fetchUsage(options: CostOptions): Promise<UsageResponse | string> {
  const url = new URL("v1/spillway/usage", options.url.endsWith("/") ? options.url : `${options.url}/`);
  url.searchParams.set("group_by", options.groupBy);
  if (options.from !== undefined) url.searchParams.set("from", options.from);
  if (options.to !== undefined) url.searchParams.set("to", options.to);
  const adminKey = process.env[options.adminKeyEnv];
  const headers: Record<string, string> = adminKey ? { authorization: `Bearer ${adminKey}` } : {};

  let response: Response;
  try {
    response = await fetch(url, { headers, signal: AbortSignal.timeout(30_000) });
  } catch (error) {
    const reason = error instanceof Error && error.cause instanceof Error ? error.cause.message : String(error);
    return `cannot reach the gateway at ${options.url} (${reason}). Check --url, or start the gateway with \`spillway up\`.`;
  }

  const body: unknown = await response.json().catch(() => undefined);
  if (!response.ok) {
    const message = errorMessage(body) ?? "the response has no error message";
    return `The gateway at ${options.url} returned HTTP ${response.status}: ${message}`;
  }
  if (!isUsageResponse(body)) return `The gateway at ${options.url} returned a body that is not a usage summary. Is the URL a Spillway gateway?`;
  return body;
}

const columns: { title: string; cell: (row: UsageRow) => string }[] = [
  { title: "REQUESTS", cell: (row) => formatInteger(row.requests) },
  { title: "PROMPT TOKENS", cell: (row) => formatInteger(row.promptTokens) },
  { title: "COMPLETION TOKENS", cell: (row) => formatInteger(row.completionTokens) },
  { title: "SPEND USD", cell: (row) => formatUsd(row.spendUsd) },
  { title: "USD PER 1M TOKENS", cell: (row) => (row.usdPerMillionTokens === null ? "-" : row.usdPerMillionTokens.toFixed(4)) },
  { title: "GEMINI-EQUIVALENT USD", cell: (row) => formatUsd(row.geminiEquivalentUsd) },
  { title: "SAVED USD", cell: (row) => formatUsd(row.geminiEquivalentUsd - row.spendUsd) },
];

/** Formats the summary as a table: key left-aligned, numbers right-aligned, then the total. */
export function formatCostTable(usage: UsageResponse): string {
  const header = [usage.group_by.toUpperCase(), ...columns.map((column) => column.title)];
  const rows = usage.data.map((row) => [row.key, ...columns.map((column) => column.cell(row))]);
  const total = ["TOTAL", ...columns.map((column) => column.cell(usage.total))];
  const widths = header.map((title, index) => Math.max(title.length, ...[...rows, total].map((cells) => cells[index]?.length ?? 0)));

  const formatLine = (cells: string[]) =>
    cells.map((cell, index) => (index === 0 ? cell.padEnd(widths[index] ?? 0) : cell.padStart(widths[index] ?? 0))).join("  ").trimEnd();
  const rule = widths.map((width) => "-".repeat(width)).join("  ");
  const lines = [
    `Usage from ${usage.from} to ${usage.to}, by ${usage.group_by}`,
    "",
    formatLine(header),
    ...rows.map(formatLine),
    rule,
    formatLine(total),
    "",
    "SAVED USD is the gemini-equivalent minus the spend; it is negative where the traffic cost more than Gemini would have.",
  ];
  return `${lines.join("\n")}\n`;
}

function parseCommandLine(args: string[]) {
  try {
    const { values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        url: { type: "string", default: "http://127.0.0.1:8080" },
        "group-by": { type: "string", default: "tenant" },
        from: { type: "string" },
        to: { type: "string" },
        "admin-key-env": { type: "string", default: "SPILLWAY_ADMIN_KEY" },
        help: { type: "boolean", default: false },
      },
    });
    return values;
  } catch (error) {
    if (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS")) {
      const sentence = /[.!?]$/.test(error.message) ? error.message : `${error.message}.`;
      throw new UsageError(`${sentence} Run \`spillway cost --help\` for the options.`);
    }
    throw error;
  }
}

/** Formats USD to the micro-USD, without the "-0.000000" that float error would otherwise print. */
function formatUsd(value: number): string {
  const rounded = Math.round(value * 1_000_000) / 1_000_000;
  return (rounded === 0 ? 0 : rounded).toFixed(6);
}

function formatInteger(value: number): string {
  return value.toLocaleString("en-US");
}

function errorMessage(body: unknown): string | undefined {
  if (typeof body !== "object" || body === null || !("error" in body)) return undefined;
  const error = body.error;
  if (typeof error !== "object" || error === null || !("message" in error) || typeof error.message !== "string") return undefined;
  return error.message;
}

function isUsageResponse(body: unknown): body is UsageResponse {
  return typeof body === "object" && body !== null && "object" in body && body.object === "spillway.usage";
}
