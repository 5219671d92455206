import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { usableCpuCount } from "../../worker/threads.ts";
import { startWorker, type WorkerOptions } from "../../worker/run.ts";
import { createLogger } from "../logger.ts";
import { parseInteger, UsageError } from "../options.ts";

const help = `Usage: spillway worker --model <path|hf:uri> [options]

Serves one GGUF model over the OpenAI chat completions API.

Options:
  --model <path|uri>     GGUF file, or a node-llama-cpp URI such as hf:<user>/<repo>:Q4_K_M (required)
  --host <address>       Address to listen on (default 127.0.0.1)
  --port <n>             Port to listen on; 0 picks a free one (default 8000)
  --name <id>            Model id clients send in "model" (default: the file name without .gguf)
  --slots <n>            Requests decoded in parallel on one context (default 4)
  --queue <n>            Requests that may wait for a slot before 429 (default 4 x slots)
  --threads <n>          CPU threads (default: the CPUs this process may use, from the cgroup quota)
  --context-size <n>     Tokens of context per slot (default 4096)
  --gpu <auto|cuda|vulkan|false>  Compute backend (default auto: a GPU when its binary is installed)
  --models-dir <dir>     Download cache for hf: models (default ~/.cache/spillway/models)
  --max-body-bytes <n>   Largest accepted request body (default 4194304)
  --drain-seconds <n>    On SIGTERM, how long in-flight requests may take to finish (default 30)
  --help                 Show this help
`;

export function parseWorkerOptions(args: string[]): WorkerOptions | undefined {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
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
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(help);
    return undefined;
  }
  if (values.model === undefined) throw new UsageError("Missing --model. Pass a GGUF file or an hf: URI; try `spillway tiny-model --out /tmp/t.gguf` for an offline one.");
  const gpu = parseGpu(values.gpu);
  const slots = parseInteger(values.slots, "--slots", 4, 1, 256);
  return {
    model: values.model,
    host: values.host,
    port: parseInteger(values.port, "--port", 8000, 0, 65535),
    name: values.name ?? defaultModelName(values.model),
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

export async function runWorkerCommand(args: string[]): Promise<void> {
  const options = parseWorkerOptions(args);
  if (options === undefined) return;
  const logger = createLogger("spillway-worker");
  const worker = await startWorker(options, logger);

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, "second signal; exiting without draining");
      process.exit(1);
    }
    logger.info({ signal }, "shutting down");
    worker.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  try {
    await worker.ready;
  } catch (error) {
    logger.error({ err: error, model: options.model }, "model failed to load");
    await worker.stop().catch(() => undefined);
    process.exit(1);
  }
}
