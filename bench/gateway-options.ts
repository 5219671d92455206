import { parseArgs } from "node:util";

export interface GatewayBenchOptions {
  /** Requests per second of each run. */
  rates: number[];
  /** Measured seconds per run. */
  durationSeconds: number;
  /** Seconds at the same rate before each measured run, not counted. */
  warmupSeconds: number;
  stream: boolean;
  /** Folder for a CPU profile of the controller process, written when it exits. */
  profileDirectory: string | undefined;
  out: string | undefined;
}

export const usage = `Usage: npm run bench:gateway -- [options]

Measures the latency the gateway adds over calling a worker directly: an instant fake worker, the real
controller in front of it and an open-loop load generator run as three processes, at fixed request rates.

Options:
  --rates <list>       Requests per second, comma-separated (default 100,1000)
  --duration <s>       Measured seconds per run (default 15)
  --warmup <s>         Unmeasured seconds at the same rate before each run (default 3)
  --no-stream          Skip the streaming runs
  --quick              Smoke mode: 2 s runs after a 1 s warm-up
  --profile <dir>      Write a CPU profile of the controller process (node --cpu-prof) to this folder
  --out <file>         Also write the markdown report to this file
  --help               Show this help
`;

/** Parses argv. Returns undefined after printing the help when `--help` is given. */
export function parseGatewayBenchOptions(args: string[]): GatewayBenchOptions | undefined {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      rates: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      "no-stream": { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      profile: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(usage);
    return undefined;
  }
  const quick = values.quick;
  return {
    rates: parseRates(values.rates ?? "100,1000"),
    durationSeconds: parseSeconds(values.duration, "--duration", quick ? 2 : 15, 1),
    warmupSeconds: parseSeconds(values.warmup, "--warmup", quick ? 1 : 3, 0),
    stream: !values["no-stream"],
    profileDirectory: values.profile,
    out: values.out,
  };
}

function parseRates(value: string): number[] {
  const rates = value.split(",").map((part) => part.trim());
  return rates.map((rate) => {
    const parsed = Number(rate);
    if (!/^\d+$/.test(rate) || parsed < 1 || parsed > 20_000) {
      throw new Error(`Invalid value for --rates: '${value}'. Expected whole requests per second from 1 to 20000, such as 100,1000.`);
    }
    return parsed;
  });
}

function parseSeconds(value: string | undefined, option: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed) || parsed < min || parsed > 600) {
    throw new Error(`Invalid value for ${option}: '${value}'. Expected seconds from ${min} to 600.`);
  }
  return parsed;
}
