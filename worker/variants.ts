import type { Llama } from "node-llama-cpp";
import type { Logger } from "pino";

import { ApiError } from "../api/errors.ts";
import { createLlama, Engine, resolveModelPath, type EngineOptions, type VariantSpec } from "./engine.ts";
import { planSwapMemory, type SwapMode } from "./memory.ts";
import type { WorkerMetrics } from "./metrics.ts";
import { SlotRouter } from "./slots.ts";

/** `auto` chooses per swap from free memory; the others force a mode. */
export type SwapModeSetting = SwapMode | "auto";

export interface VariantManagerOptions {
  /** The quantization ladder, highest quality first. */
  ladder: readonly VariantSpec[];
  /** Index in `ladder` of the variant loaded at start. */
  startIndex: number;
  engine: EngineOptions;
  maxQueue: number;
  swapMode: SwapModeSetting;
  /** The model id clients send, for the model info metric. */
  modelId: string;
}

export interface SwapResult {
  quant: string;
  /** The variant served before; null when the worker served none after a failed swap. */
  previousQuant: string | null;
  /** `none` when the requested variant was already serving. */
  mode: SwapMode | "none";
  seconds: number;
}

interface SwapInProgress {
  target: string;
  /** Undefined until the mode is chosen. */
  mode: SwapMode | undefined;
}

/**
 * Owns the worker's models: the one `Llama` instance, the variant that serves, and swaps between the
 * rungs of the ladder. A swap routes new and queued requests to the new variant, lets in-flight ones
 * finish on the old one, and disposes the old one once it is idle.
 */
export class VariantManager {
  readonly router: SlotRouter;
  readonly #llama: Llama;
  readonly #ladder: VariantSpec[];
  readonly #options: VariantManagerOptions;
  readonly #metrics: WorkerMetrics;
  readonly #logger: Logger;
  #swap: SwapInProgress | undefined;
  /** Settles when the last swap has; shutdown waits for it before disposing. */
  #swapSettled: Promise<unknown> = Promise.resolve();
  #closing = false;

  private constructor(llama: Llama, options: VariantManagerOptions, metrics: WorkerMetrics, logger: Logger) {
    this.#llama = llama;
    this.#options = options;
    this.#ladder = [...options.ladder];
    this.#metrics = metrics;
    this.#logger = logger;
    this.router = new SlotRouter(options.engine.slots, options.maxQueue);
  }

  /** Creates the `Llama` instance and loads the start variant. */
  static async start(options: VariantManagerOptions, metrics: WorkerMetrics, logger: Logger): Promise<VariantManager> {
    const spec = options.ladder[options.startIndex];
    if (spec === undefined) throw new Error(`The ladder has no variant at index ${options.startIndex}.`);
    const llama = await createLlama(options.engine, logger);
    try {
      const manager = new VariantManager(llama, options, metrics, logger);
      const engine = await manager.#load(spec, await resolveModelPath(spec.model, options.engine.modelsDirectory, logger));
      // A one-model worker learns its quantization from the GGUF header.
      manager.#ladder[options.startIndex] = { ...spec, quant: engine.quant };
      manager.#serve(engine);
      return manager;
    } catch (error) {
      await llama.dispose();
      throw error;
    }
  }

  get llama(): Llama {
    return this.#llama;
  }

  /** The quantization new requests go to; undefined while a drain-mode swap has none loaded. */
  get quant(): string | undefined {
    return this.router.serving?.quant;
  }

  get ladder(): string[] {
    return this.#ladder.map((variant) => variant.quant ?? "unknown");
  }

  get swapping(): boolean {
    return this.#swap !== undefined;
  }

  /** True during a drain-mode swap, while the worker cannot take work at full capacity. */
  get drainModeSwapping(): boolean {
    return this.#swap?.mode === "drain";
  }

  /** True when a failed swap left no variant loaded; a later swap can recover. */
  get failed(): boolean {
    return this.#swap === undefined && this.router.serving === undefined;
  }

  /**
   * Switches to the ladder's variant `quant` and resolves once the old variant is disposed. Throws a
   * 400 for a quant not on the ladder, 409 while another swap runs, and 500 when the load fails.
   */
  async swap(quant: string): Promise<SwapResult> {
    const target = this.#ladder.find((variant) => variant.quant === quant);
    if (target === undefined) {
      throw new ApiError(400, `'${quant}' is not on this worker's ladder. Choose one of: ${this.ladder.join(", ")}.`, {
        param: "quant",
        code: "unknown_quant",
      });
    }
    if (this.#swap !== undefined) {
      throw new ApiError(409, `A swap to ${this.#swap.target} is in progress. Retry once it has finished.`, { code: "swap_in_progress" });
    }
    if (this.#closing) throw new ApiError(503, "The worker is shutting down.", { code: "worker_not_ready" });
    const previous = this.router.serving;
    if (previous?.quant === quant) return { quant, previousQuant: quant, mode: "none", seconds: 0 };

    const swap: SwapInProgress = { target: quant, mode: undefined };
    this.#swap = swap;
    this.#metrics.swapInProgress.set(1);
    const done = this.#switchTo(target, previous, swap);
    this.#swapSettled = done.catch(() => undefined);
    try {
      return await done;
    } finally {
      this.#swap = undefined;
      this.#metrics.swapInProgress.set(0);
    }
  }

  /** Waits for a swap in progress, then disposes every model and the `Llama` instance. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#swapSettled;
    for (const engine of this.router.engines()) await engine.dispose();
    await this.#llama.dispose();
  }

  async #switchTo(target: VariantSpec, previous: Engine | undefined, swap: SwapInProgress): Promise<SwapResult> {
    const started = performance.now();
    const from = previous?.quant ?? null;
    this.#logger.info({ from, to: swap.target }, "variant swap started");
    const modelPath = await resolveModelPath(target.model, this.#options.engine.modelsDirectory, this.#logger);
    const mode = previous === undefined ? "drain" : await this.#chooseMode(modelPath, from, swap.target);
    swap.mode = mode;
    const engine = mode === "overlap" && previous !== undefined
      ? await this.#overlap(target, modelPath, previous)
      : await this.#drain(target, modelPath, previous);
    const seconds = (performance.now() - started) / 1000;
    this.#metrics.variantSwaps.inc({ from: from ?? "none", to: engine.quant });
    this.#logger.info({ from, to: engine.quant, mode, seconds }, "variant swap finished");
    return { quant: engine.quant, previousQuant: from, mode, seconds };
  }

  async #chooseMode(modelPath: string, from: string | null, to: string): Promise<SwapMode> {
    const setting = this.#options.swapMode;
    if (setting !== "auto") {
      this.#logger.info({ from, to, mode: setting }, "variant swap mode set by --swap-mode");
      return setting;
    }
    const plan = await planSwapMemory(this.#llama, modelPath, this.#options.engine);
    this.#logger.info({ from, to, mode: plan.mode, estimate: plan.estimate, ram: plan.ram, vram: plan.vram }, "variant swap mode chosen from free memory");
    return plan.mode;
  }

  /** Loads the new variant beside the old one; a failed load leaves the old one serving. */
  async #overlap(target: VariantSpec, modelPath: string, previous: Engine): Promise<Engine> {
    let engine: Engine;
    try {
      engine = await this.#load(target, modelPath);
    } catch (error) {
      throw this.#loadFailed(target, error, `the worker still serves ${previous.quant}`);
    }
    this.#serve(engine);
    await this.#unload(previous);
    return engine;
  }

  /** Unloads the old variant before loading the new one; a failed load reloads the old one. */
  async #drain(target: VariantSpec, modelPath: string, previous: Engine | undefined): Promise<Engine> {
    this.router.route(undefined);
    if (previous !== undefined) await this.#unload(previous);
    if (this.#closing) throw new ApiError(503, "The worker shut down during the swap.", { code: "worker_not_ready" });
    try {
      const engine = await this.#load(target, modelPath);
      this.#serve(engine);
      return engine;
    } catch (error) {
      const restored = previous !== undefined && (await this.#restore(previous));
      throw this.#loadFailed(target, error, restored ? `the worker serves ${previous.quant} again` : "the worker serves no variant");
    }
  }

  /** Reloads a variant that a drain-mode swap unloaded. Returns false, and rejects requests, when that fails too. */
  async #restore(previous: Engine): Promise<boolean> {
    try {
      this.#serve(await this.#load({ quant: previous.quant, model: previous.modelPath }, previous.modelPath));
      return true;
    } catch (error) {
      this.#logger.error({ err: error, quant: previous.quant }, "reloading the previous variant failed; no variant is loaded");
      this.router.rejectRequests(new ApiError(503, "This worker has no model loaded after a failed swap. Retry on another replica.", {
        type: "server_error",
        code: "worker_not_ready",
        headers: { "retry-after": "1" },
      }));
      return false;
    }
  }

  #load(spec: VariantSpec, modelPath: string): Promise<Engine> {
    return Engine.load(this.#llama, spec, modelPath, this.#options.engine, this.#logger);
  }

  #serve(engine: Engine): void {
    this.router.route(engine);
    this.#metrics.showVariant(this.#options.modelId, engine.quant, engine.loadSeconds);
  }

  async #unload(engine: Engine): Promise<void> {
    await engine.whenIdle();
    this.router.retire(engine);
    await engine.dispose();
  }

  #loadFailed(target: VariantSpec, error: unknown, outcome: string): ApiError {
    this.#logger.error({ err: error, quant: target.quant }, "loading a variant failed");
    return new ApiError(500, `Loading ${target.quant ?? "the variant"} failed, and ${outcome}. The cause is in the worker log.`, {
      type: "server_error",
      code: "swap_failed",
      cause: error,
    });
  }
}
