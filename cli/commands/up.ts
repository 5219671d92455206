import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { ConfigError, configForModel, loadConfig, type ConfigOverrides } from "../../controller/config/load.ts";
import type { SpillwayConfig } from "../../controller/config/schema.ts";
import { startController } from "../../controller/controller.ts";
import { ModelFetchError, prefetchModels } from "../../controller/models.ts";
import { createLogger } from "../logger.ts";
import { stopOnSignals } from "../shutdown.ts";
import { parseInteger, UsageError } from "../options.ts";

const help = `Usage: spillway up [--config spillway.yaml] [--model <path|hf:uri>] [options]

Starts Spillway on this machine: the OpenAI-compatible gateway and each pool's replicas as worker
processes. Stop it with Ctrl-C or SIGTERM; replicas drain first.

Options:
  --config <file>        Configuration file (default spillway.yaml when it exists)
  --model <path|uri>     Serve one model as one pool instead of a configuration file
  --host <address>       Gateway address (overrides gateway.host)
  --port <n>             Gateway port (overrides gateway.port)
  --models-dir <dir>     Download cache for hf: models (default ~/.cache/spillway/models)
  --state-file <file>    Where metered usage is kept across restarts (default .spillway/usage.jsonl)
  --help                 Show this help
`;

interface UpOptions {
  config?: string;
  model?: string;
  overrides: ConfigOverrides;
  modelsDirectory: string;
  statePath: string;
}

function parseUpOptions(args: string[]): UpOptions | undefined {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      config: { type: "string" },
      model: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      "models-dir": { type: "string" },
      "state-file": { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(help);
    return undefined;
  }
  if (values.config !== undefined && values.model !== undefined) {
    throw new UsageError("Pass either --config or --model, not both.");
  }
  const gateway: NonNullable<ConfigOverrides["gateway"]> = {};
  if (values.host !== undefined) gateway.host = values.host;
  if (values.port !== undefined) gateway.port = parseInteger(values.port, "--port", 8080, 0, 65535);
  return {
    ...(values.config === undefined ? {} : { config: values.config }),
    ...(values.model === undefined ? {} : { model: values.model }),
    overrides: { gateway },
    modelsDirectory: values["models-dir"] ?? path.join(os.homedir(), ".cache", "spillway", "models"),
    statePath: values["state-file"] ?? path.join(".spillway", "usage.jsonl"),
  };
}

async function resolveConfig(options: UpOptions): Promise<SpillwayConfig> {
  if (options.model !== undefined) return configForModel(options.model, { overrides: options.overrides });
  const file = options.config ?? "spillway.yaml";
  if (options.config === undefined && !existsSync(file)) {
    throw new UsageError("No spillway.yaml here. Pass --config <file>, or --model <path|hf:uri> to serve one model.");
  }
  return loadConfig(file, process.env, options.overrides);
}

export async function runUpCommand(args: string[]): Promise<void> {
  const options = parseUpOptions(args);
  if (options === undefined) return;
  const logger = createLogger("spillway-controller");
  let config: SpillwayConfig;
  try {
    config = await prefetchModels(await resolveConfig(options), options.modelsDirectory, logger);
  } catch (error) {
    if (error instanceof ConfigError || error instanceof ModelFetchError) {
      process.stderr.write(`spillway up: ${error.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw error;
  }

  let controller;
  try {
    controller = await startController({
      config,
      logger,
      statePath: options.statePath,
      plannerStatePath: path.join(path.dirname(options.statePath), "planner.json"),
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE") throw error;
    const { host, port } = config.gateway;
    process.stderr.write(`spillway up: ${host}:${port} is already in use, perhaps by another gateway. Stop it, or pass --port <n>.\n`);
    process.exitCode = 1;
    return;
  }
  process.stderr.write(`Spillway gateway on ${controller.url}/v1 (pools: ${config.pools.map((pool) => pool.name).join(", ")})\n`);

  stopOnSignals(logger, () => controller.stop());
}
