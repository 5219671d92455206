import { existsSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { knownQuantNames, type VariantSpec } from "../../worker/engine.ts";
import { defaultAdminKeyEnv, startWorker, type WorkerOptions } from "../../worker/run.ts";
import { usableCpuCount } from "../../worker/threads.ts";
import { createLogger } from "../logger.ts";
import { stopOnSignals } from "../shutdown.ts";
import { parseInteger, UsageError } from "../options.ts";

const help = `Usage: spillway worker --model <path|hf:uri> [options]
       spillway worker --variant <QUANT=path|uri> [--variant ...] [options]

Serves one GGUF model over the OpenAI chat completions API. With a ladder of variants, the admin
endpoint POST /admin/variant switches the one served without failing a request.

Options:
  --model <path|uri>     GGUF file, or a node-llama-cpp URI such as hf:<user>/<repo>:Q4_K_M; its
                         quantization is read from the file
  --variant <QUANT=path> One rung of the quantization ladder, such as Q4_K_M=/models/npc-Q4_K_M.gguf;
                         repeat it, highest quality first (instead of --model)
  --start-variant <QUANT>  The variant served at start (default the first --variant)
  --start-variant-env <NAME>  Environment variable that may name the start variant instead; a value
                         that is empty or not on the ladder is ignored (spillway controller sets it,
                         so that new pods start on the pool's current rung)
  --swap-mode <auto|overlap|drain>  How a swap treats memory: overlap loads the new variant beside
                         the old one, drain unloads the old one first, auto decides from free memory
                         (default auto)
  --admin-key-env <NAME> Environment variable holding the admin key for /admin endpoints
                         (default ${defaultAdminKeyEnv}; unset means they answer 403)
  --host <address>       Address to listen on (default 127.0.0.1)
  --port <n>             Port to listen on; 0 picks a free one (default 8000)
  --name <id>            Model id clients send in "model" (default: the first file's name without
                         .gguf and, for a ladder, without its quantization)
  --slots <n>            Requests decoded in parallel on one context (default 4)
  --queue <n>            Requests that may wait for a slot before 429 (default 4 x slots)
  --threads <n>          CPU threads (default: the CPUs this process may use, from the cgroup quota)
  --context-size <n>     Tokens of context per slot (default 4096)
  --gpu <auto|cuda|vulkan|false>  Compute backend (default auto: a GPU when its binary is installed)
  --models-dir <dir>     Download cache for hf: models (default ~/.cache/spillway/models)
  --max-body-bytes <n>   Largest accepted request body (default 4194304)
  --drain-seconds <n>    On SIGTERM, how long in-flight requests may take to finish (default 30)
  --exit-with-parent     Drain and exit when standard input closes (set by spillway up for its replicas)
  --help                 Show this help
`;

export function parseWorkerOptions(args: string[]): WorkerOptions | undefined {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
      variant: { type: "string", multiple: true },
      "start-variant": { type: "string" },
      "start-variant-env": { type: "string" },
      "swap-mode": { type: "string", default: "auto" },
      "admin-key-env": { type: "string", default: defaultAdminKeyEnv },
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      name: { type: "string" },
      slots: { type: "string" },
      queue: { type: "string" },
      threads: { type: "string" },
      "context-size": { type: "string" },
      gpu: { type: "string", default: "auto" },
      "models-dir": { type: "string" },
      "max-body-bytes": { type: "string" },
      "drain-seconds": { type: "string" },
      "exit-with-parent": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(help);
    return undefined;
  }
  const startVariant = values["start-variant"] ?? startVariantFromEnv(values["start-variant-env"], values.variant ?? []);
  const served = parseServed(values.model, values.variant ?? [], startVariant);
  const gpu = parseGpu(values.gpu);
  const slots = parseInteger(values.slots, "--slots", 4, 1, 256);
  return {
    ...served,
    swapMode: parseSwapMode(values["swap-mode"]),
    adminKeyEnv: parseVariableName(values["admin-key-env"]),
    host: values.host,
    port: parseInteger(values.port, "--port", 8000, 0, 65535),
    name: values.name ?? served.defaultName,
    slots,
    maxQueue: parseInteger(values.queue, "--queue", 4 * slots, 0, 100_000),
    threads: parseInteger(values.threads, "--threads", usableCpuCount(), 1, 1024),
    contextSize: parseInteger(values["context-size"], "--context-size", 4096, 64, 1_048_576),
    gpu,
    modelsDirectory: values["models-dir"] ?? path.join(os.homedir(), ".cache", "spillway", "models"),
    maxBodyBytes: parseInteger(values["max-body-bytes"], "--max-body-bytes", 4 * 1024 * 1024, 1024),
    drainSeconds: parseInteger(values["drain-seconds"], "--drain-seconds", 30, 0, 3600),
  };
}

interface Served {
  model?: string;
  variants?: VariantSpec[];
  startVariant?: string;
  defaultName: string;
}

/** Reads the start variant from an environment variable, when it names the quant of one of the `QUANT=PATH` rungs. */
function startVariantFromEnv(variable: string | undefined, variantArgs: string[]): string | undefined {
  if (variable === undefined) return undefined;
  const value = process.env[parseVariableName(variable, "--start-variant-env")]?.trim().toUpperCase();
  if (!value) return undefined;
  const quants = variantArgs.map((arg) => arg.split("=", 1)[0]!.trim().toUpperCase());
  return quants.includes(value) ? value : undefined;
}

/** Parses what the worker serves: one `--model`, or a ladder of `--variant`s with the rung to start on. */
function parseServed(model: string | undefined, variantArgs: string[], startVariant: string | undefined): Served {
  if (model !== undefined && variantArgs.length > 0) {
    throw new UsageError("Pass either --model or --variant, not both. A ladder names every rung with --variant.");
  }
  if (model !== undefined) {
    if (startVariant !== undefined) throw new UsageError("--start-variant needs a ladder: pass --variant QUANT=PATH for each rung instead of --model.");
    return { model, defaultName: defaultModelName(model) };
  }
  if (variantArgs.length === 0) {
    throw new UsageError("Missing --model or --variant. Pass a GGUF file or an hf: URI; try `spillway tiny-model --out /tmp/t.gguf` for an offline one.");
  }
  const variants = parseLadder(variantArgs);
  const first = variants[0]!;
  if (startVariant === undefined) return { variants, defaultName: ladderModelName(first) };
  const start = startVariant.toUpperCase();
  if (!variants.some((variant) => variant.quant === start)) {
    throw new UsageError(`--start-variant ${startVariant} is not on the ladder. Choose one of: ${variants.map((variant) => variant.quant).join(", ")}.`);
  }
  return { variants, startVariant: start, defaultName: ladderModelName(first) };
}

/** Parses `QUANT=PATH` values into a ladder, checking each quantization name and local file. */
export function parseLadder(values: readonly string[]): VariantSpec[] {
  const known = knownQuantNames();
  const ladder: VariantSpec[] = [];
  for (const value of values) {
    const separator = value.indexOf("=");
    if (separator <= 0 || separator === value.length - 1) {
      throw new UsageError(`Invalid value for --variant: '${value}'. Expected QUANT=PATH, such as Q4_K_M=/models/npc-Q4_K_M.gguf.`);
    }
    const quant = value.slice(0, separator).trim().toUpperCase();
    const model = value.slice(separator + 1).trim();
    if (!known.includes(quant)) throw new UsageError(`Unknown quantization '${quant}' in --variant. Known names: ${known.join(", ")}.`);
    if (ladder.some((variant) => variant.quant === quant)) {
      throw new UsageError(`--variant ${quant} is given twice. Each rung of the ladder needs its own quantization.`);
    }
    ladder.push({ quant, model: isModelUri(model) ? model : existingFile(model, quant) });
  }
  return ladder;
}

/** Tells a URI such as `hf:user/repo:Q4_K_M` or `https://…` from a path. A one-letter scheme is a Windows drive letter. */
function isModelUri(model: string): boolean {
  return /^[a-z][a-z0-9+.-]+:/i.test(model);
}

function existingFile(model: string, quant: string): string {
  const resolved = path.resolve(model);
  if (!existsSync(resolved) || !statSync(resolved).isFile()) {
    throw new UsageError(`--variant ${quant}: no model file at ${resolved}.`);
  }
  return resolved;
}

function parseSwapMode(value: string): NonNullable<WorkerOptions["swapMode"]> {
  if (value === "auto" || value === "overlap" || value === "drain") return value;
  throw new UsageError(`Invalid value for --swap-mode: '${value}'. Expected auto, overlap or drain.`);
}

function parseVariableName(value: string, option = "--admin-key-env"): string {
  if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(value)) return value;
  throw new UsageError(`Invalid value for ${option}: '${value}'. Expected an environment variable name such as ${defaultAdminKeyEnv}.`);
}

function parseGpu(value: string): WorkerOptions["gpu"] {
  if (value === "false") return false;
  if (value === "auto" || value === "cuda" || value === "vulkan") return value;
  throw new UsageError(`Invalid value for --gpu: '${value}'. Expected auto, cuda, vulkan or false.`);
}

/** Names a model after its file: `/models/npc-Q4_K_M.gguf` becomes `npc-Q4_K_M`. */
export function defaultModelName(model: string): string {
  const base = model.startsWith("hf:") ? model.slice(3).split("/").at(-1) ?? model : path.basename(model);
  return base.replace(/\.gguf$/i, "").replace(/:/g, "-");
}

/** Names a ladder after its first file without the quantization, which changes with each swap: `npc-Q4_K_M.gguf` becomes `npc`. */
function ladderModelName(first: VariantSpec): string {
  const name = defaultModelName(first.model);
  const suffix = new RegExp(`[-._]${first.quant ?? ""}$`, "i");
  const stripped = name.replace(suffix, "");
  return stripped === "" ? name : stripped;
}

export async function runWorkerCommand(args: string[]): Promise<void> {
  const options = parseWorkerOptions(args);
  if (options === undefined) return;
  const logger = createLogger("spillway-worker");
  const worker = await startWorker(options, logger);

  const shutdown = stopOnSignals(logger, () => worker.stop());
  if (args.includes("--exit-with-parent")) {
    // The parent keeps the other end of stdin open; its end means the parent is gone, however it died.
    process.stdin.on("end", () => {
      logger.warn("the parent process is gone; shutting down");
      shutdown();
    });
    process.stdin.resume();
  }

  try {
    await worker.ready;
  } catch (error) {
    logger.error({ err: error, model: options.model ?? options.variants?.map((variant) => variant.model) }, "model failed to load");
    await worker.stop().catch(() => undefined);
    process.exit(1);
  }
}
