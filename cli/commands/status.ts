import { parseArgs } from "node:util";

import { UsageError } from "../options.ts";

const help = `Usage: spillway status [--url http://127.0.0.1:8080] [--admin-key-env SPILLWAY_ADMIN_KEY] [--json]

Prints each pool of a running gateway: its ladder, pressure, queue, and every replica with its state,
variant and load.
`;

interface StatusReplica {
  id: string;
  state: string;
  quant: string;
  rung: number;
  slots: number;
  outstanding: number;
  swapping: boolean;
}

interface StatusPool {
  name: string;
  ladder: string[];
  queueDepth: number;
  replicas: StatusReplica[];
  control: { pressure: number; lastStepAt?: number; lastScaleAt?: number } | null;
}

interface StatusBody {
  pools: StatusPool[];
  overflow: { enabled: boolean; available: boolean };
}

export async function runStatusCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      url: { type: "string", default: "http://127.0.0.1:8080" },
      "admin-key-env": { type: "string", default: "SPILLWAY_ADMIN_KEY" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(help);
    return;
  }
  if (!/^https?:\/\//.test(values.url)) throw new UsageError(`Invalid value for --url: '${values.url}'. Expected an http:// or https:// URL.`);
  const key = process.env[values["admin-key-env"]];
  let response: Response;
  try {
    response = await fetch(new URL("/v1/spillway/status", values.url), { headers: key === undefined ? {} : { authorization: `Bearer ${key}` } });
  } catch (error) {
    process.stderr.write(`spillway status: cannot reach ${values.url} (${error instanceof Error ? error.message : String(error)}). Is \`spillway up\` running?\n`);
    process.exitCode = 1;
    return;
  }
  if (!response.ok) {
    process.stderr.write(`spillway status: ${values.url} returned HTTP ${response.status}: ${await response.text()}\n`);
    process.exitCode = 1;
    return;
  }
  const body = (await response.json()) as StatusBody;
  process.stdout.write(values.json ? `${JSON.stringify(body, null, 2)}\n` : formatStatus(body));
}

/** Formats the status body as one block per pool. */
export function formatStatus(body: StatusBody): string {
  const lines: string[] = [];
  for (const pool of body.pools) {
    const pressure = pool.control === null ? "n/a" : pool.control.pressure.toFixed(2);
    lines.push(`pool ${pool.name}  ladder ${pool.ladder.join(" > ")}  pressure ${pressure}  queue ${pool.queueDepth}`);
    const rows = [["REPLICA", "STATE", "VARIANT", "BUSY", "SWAPPING"], ...pool.replicas.map((replica) => [
      replica.id,
      replica.state,
      replica.quant,
      `${replica.outstanding}/${replica.slots}`,
      replica.swapping ? "yes" : "no",
    ])];
    const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
    for (const row of rows) lines.push(`  ${row.map((cell, column) => cell.padEnd(widths[column]!)).join("  ")}`.trimEnd());
    if (pool.replicas.length === 0) lines.push("  (no replicas)");
  }
  lines.push(`overflow to gemini: ${body.overflow.enabled ? (body.overflow.available ? "available" : "unavailable") : "off"}`);
  return `${lines.join("\n")}\n`;
}
