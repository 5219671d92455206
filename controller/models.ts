import { resolveModelFile } from "node-llama-cpp";
import type { Logger } from "pino";

import type { SpillwayConfig } from "./config/schema.ts";

/** Raised when a pool's model file cannot be found or downloaded before any replica starts. */
export class ModelFetchError extends Error {
  override name = "ModelFetchError";
}

/**
 * Resolves every variant of every pool to a local file before replicas start: `hf:` URIs download into
 * `directory` once (with node-llama-cpp's progress bar on a terminal) and are cached there. Doing it in
 * the controller means one download per file rather than one per replica, and a missing network fails
 * at start with a message, not as workers crashing in a restart loop.
 */
export async function prefetchModels(config: SpillwayConfig, directory: string, logger: Logger): Promise<SpillwayConfig> {
  const pools = [];
  for (const pool of config.pools) {
    const variants = [];
    for (const variant of pool.variants) {
      variants.push({ ...variant, model: await fetchOne(variant.model, directory, logger, pool.name, variant.quant) });
    }
    pools.push({ ...pool, variants });
  }
  return { ...config, pools };
}

async function fetchOne(model: string, directory: string, logger: Logger, pool: string, quant: string): Promise<string> {
  const started = performance.now();
  try {
    const file = await resolveModelFile(model, { directory, cli: process.stderr.isTTY, download: "auto" });
    logger.info({ pool, quant, model, file, seconds: (performance.now() - started) / 1000 }, "model file ready");
    return file;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ModelFetchError(
      `Could not get the model ${model} (pool ${pool}, ${quant}): ${reason}\n` +
        "Without network access, serve a local file instead: `npx spillway up --model <file.gguf>`, " +
        "or make an offline test model with `npx spillway tiny-model --out /tmp/tiny.gguf` and pass it to --model.",
      { cause: error },
    );
  }
}
