import { resolveModelFile } from "node-llama-cpp";
import type { Logger } from "pino";

import { readGgufQuant } from "../worker/engine.ts";
import type { SpillwayConfig } from "./config/schema.ts";

/** Raised when a pool's model file cannot be found or downloaded, or is not the quant the pool declares. */
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
      const file = await fetchOne(variant.model, directory, logger, pool.name, variant.quant);
      await checkQuant(file, pool.name, variant.quant);
      variants.push({ ...variant, model: file });
    }
    pools.push({ ...pool, variants });
  }
  return { ...config, pools };
}

/**
 * Rejects a file whose GGUF header names another quantization than the pool declares, because routing
 * and quality floors trust the declared quant. A header without a known file type is not checked.
 */
async function checkQuant(file: string, pool: string, quant: string): Promise<void> {
  let actual: string | null;
  try {
    actual = await readGgufQuant(file);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ModelFetchError(`The model file ${file} (pool ${pool}, ${quant}) is not a readable GGUF file: ${reason}`, { cause: error });
  }
  if (actual === null || quant === "default" || actual.toUpperCase() === quant.toUpperCase()) return;
  throw new ModelFetchError(
    `Pool ${pool} declares the variant ${quant}, but ${file} is ${actual} by its GGUF header. ` +
      `Set that variant's quant to ${actual}, or point its model at a ${quant} file.`,
  );
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
