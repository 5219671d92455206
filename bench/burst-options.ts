import { parseArgs } from "node:util";

export interface BurstOptions {
  quick: boolean;
  /** Seconds each rate of the profile lasts. */
  stepSeconds: number;
  /** Request rates of the profile, as multiples of one replica's measured capacity. */
  multipliers: number[];
  /** Seconds of closed-loop load per rung when measuring capacity. */
  capacitySeconds: number;
  /** Measure capacity on every rung of the ladder, not only the top one. */
  measureEveryRung: boolean;
  /** Completion tokens of every request. The tiny model never stops early, so each reply is this long. */
  maxTokens: number;
  sloSeconds: number;
  /** Delay of the mock Gemini before its response headers. */
  geminiLatencyMilliseconds: number;
  out: string | undefined;
  /** File for the controller's info-level log lines. The log is off when unset. */
  log: string | undefined;
}

export const usage = `Usage: npm run bench:burst -- [options]

Shows what each of the pool's three levers buys under a burst: replicas, the quantization ladder and
overflow to Gemini (a local mock). It measures one replica's capacity, then runs four scenarios, each on
a fresh controller, under an open-loop request rate that steps from 1x to 10x capacity and back.

Options:
  --quick              Smoke mode, about a minute: 2 s steps at 1x, 10x and 1x, top-rung capacity only
  --step <s>           Seconds per rate step (default 20)
  --out <file>         Also write the markdown report to this file
  --log <file>         Write the controllers' info-level logs to this file
  --help               Show this help
`;

const fullProfile = [1, 2, 5, 10, 5, 2, 1];
const quickProfile = [1, 10, 1];

/** Parses argv. Returns undefined after printing the help when `--help` is given. */
export function parseBurstOptions(args: string[]): BurstOptions | undefined {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      quick: { type: "boolean", default: false },
      step: { type: "string" },
      out: { type: "string" },
      log: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(usage);
    return undefined;
  }
  const quick = values.quick;
  return {
    quick,
    stepSeconds: parseStepSeconds(values.step, quick ? 2 : 20),
    multipliers: quick ? quickProfile : fullProfile,
    capacitySeconds: quick ? 2 : 8,
    measureEveryRung: !quick,
    maxTokens: 256,
    sloSeconds: 1.5,
    geminiLatencyMilliseconds: 300,
    out: values.out,
    log: values.log,
  };
}

function parseStepSeconds(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed) || parsed < 1 || parsed > 300) {
    throw new Error(`Invalid value for --step: '${value}'. Expected seconds from 1 to 300.`);
  }
  return parsed;
}
