import path from "node:path";

import {
  getLlama,
  GgufFileType,
  LlamaLogLevel,
  resolveModelFile,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
} from "node-llama-cpp";
import type { Logger } from "pino";

import { ApiError } from "../api/errors.ts";

export interface EngineOptions {
  /** A local path or a node-llama-cpp model URI such as `hf:<user>/<repo>:Q4_K_M`. */
  model: string;
  /** Parallel sequences on the one context. */
  slots: number;
  /** CPU threads for evaluation. */
  threads: number;
  /** Tokens per slot. */
  contextSize: number;
  /** Requests that may wait for a slot before new ones get 429. */
  maxQueue: number;
  /** Download cache for `hf:` models. */
  modelsDirectory: string;
  /** node-llama-cpp's compute backend: `auto` uses a GPU when its prebuilt binary is installed. */
  gpu: "auto" | "cuda" | "vulkan" | false;
}

interface Waiter {
  resolve(sequence: LlamaContextSequence): void;
  reject(error: unknown): void;
}

/**
 * One loaded model and its slots: a context with `slots` sequences, handed out one request at a time,
 * with a bounded queue of requests waiting for a free one.
 */
export class Engine {
  readonly llama: Llama;
  readonly model: LlamaModel;
  readonly context: LlamaContext;
  readonly modelPath: string;
  readonly quant: string | null;
  readonly options: EngineOptions;
  readonly loadSeconds: number;
  readonly #sequences: readonly LlamaContextSequence[];
  readonly #freeSequences: LlamaContextSequence[];
  readonly #waiters: Waiter[] = [];
  #recentServiceSeconds = 1;

  private constructor(init: {
    llama: Llama; model: LlamaModel; context: LlamaContext; modelPath: string;
    options: EngineOptions; loadSeconds: number; sequences: LlamaContextSequence[];
  }) {
    this.llama = init.llama;
    this.model = init.model;
    this.context = init.context;
    this.modelPath = init.modelPath;
    this.options = init.options;
    this.loadSeconds = init.loadSeconds;
    this.#sequences = init.sequences;
    this.#freeSequences = [...init.sequences];
    this.quant = quantName(init.model.fileInfo.metadata.general.file_type);
  }

  static async load(options: EngineOptions, logger: Logger): Promise<Engine> {
    const started = performance.now();
    // build "never": a worker must not start compiling llama.cpp when no prebuilt binary fits the machine.
    const llama = await getLlama({
      gpu: options.gpu,
      build: "never",
      maxThreads: options.threads,
      logLevel: LlamaLogLevel.warn,
      logger: forwardLlamaLog(logger),
    });
    // A terminal gets node-llama-cpp's progress bar; logs (a pod, a child process) get a line per 10%.
    const modelPath = await resolveModelFile(options.model, {
      directory: options.modelsDirectory,
      cli: process.stderr.isTTY,
      onProgress: process.stderr.isTTY ? undefined : logDownloadProgress(logger, options.model),
    });
    const model = await llama.loadModel({ modelPath });
    const context = await model.createContext({
      sequences: options.slots,
      contextSize: options.contextSize,
      threads: options.threads,
      batchSize: Math.min(512, options.contextSize),
    });
    const sequences = Array.from({ length: options.slots }, () => context.getSequence());
    const loadSeconds = (performance.now() - started) / 1000;
    logger.info(
      { model: path.basename(modelPath), gpu: llama.gpu, threads: options.threads, slots: options.slots, contextSize: options.contextSize, loadSeconds },
      "model loaded",
    );
    return new Engine({ llama, model, context, modelPath, options, loadSeconds, sequences });
  }

  get slots(): number {
    return this.options.slots;
  }

  get busySlots(): number {
    return this.options.slots - this.#freeSequences.length;
  }

  get queueDepth(): number {
    return this.#waiters.length;
  }

  /** Fraction of the context's cells that hold tokens. */
  get kvCacheUsageRatio(): number {
    const capacity = this.context.contextSize * this.options.slots;
    let used = 0;
    for (const sequence of this.#sequences) used += sequence.nextTokenIndex;
    return capacity === 0 ? 0 : used / capacity;
  }

  /**
   * Waits for a free slot. Throws a 429 `ApiError` when the queue is full, and rejects with the signal's
   * reason if the client goes away while waiting.
   */
  async acquire(signal: AbortSignal): Promise<LlamaContextSequence> {
    signal.throwIfAborted();
    const free = this.#freeSequences.pop();
    if (free !== undefined) return free;
    if (this.#waiters.length >= this.options.maxQueue) throw this.#queueFullError();

    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (sequence) => {
          signal.removeEventListener("abort", onAbort);
          resolve(sequence);
        },
        reject,
      };
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter);
        if (index >= 0) this.#waiters.splice(index, 1);
        reject(signal.reason instanceof Error ? signal.reason : new Error("request aborted while queued"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Returns a slot, handing it straight to the longest-waiting request if there is one. */
  release(sequence: LlamaContextSequence, serviceSeconds: number): void {
    this.#recentServiceSeconds = 0.8 * this.#recentServiceSeconds + 0.2 * serviceSeconds;
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter.resolve(sequence);
    else this.#freeSequences.push(sequence);
  }

  /** Rejects every queued request, for shutdown. */
  rejectWaiting(error: unknown): void {
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }

  #queueFullError(): ApiError {
    // Every queued request and slot must turn over once before a retry finds room.
    const waitSeconds = ((this.#waiters.length + this.options.slots) * this.#recentServiceSeconds) / this.options.slots;
    const retryAfter = Math.min(60, Math.max(1, Math.ceil(waitSeconds)));
    return new ApiError(
      429,
      `All ${this.options.slots} slots are busy and ${this.#waiters.length} requests are queued. Retry after ${retryAfter} s.`,
      { code: "rate_limit_exceeded", headers: { "retry-after": String(retryAfter) } },
    );
  }
}

/** Maps GGUF `general.file_type` to the usual quantization name, such as `Q4_K_M` or `F16`. */
export function quantName(fileType: number | undefined): string | null {
  if (fileType === undefined) return null;
  const name = GgufFileType[fileType];
  if (name === undefined) return null;
  return name.replace(/^(MOSTLY|ALL)_/, "");
}

function logDownloadProgress(logger: Logger, model: string) {
  let loggedDecile = -1;
  return ({ totalSize, downloadedSize }: { totalSize: number; downloadedSize: number }) => {
    const decile = totalSize > 0 ? Math.floor((downloadedSize / totalSize) * 10) : 0;
    if (decile === loggedDecile) return;
    loggedDecile = decile;
    logger.info({ model, downloadedBytes: downloadedSize, totalBytes: totalSize, percent: decile * 10 }, "downloading model");
  };
}

function forwardLlamaLog(logger: Logger) {
  return (level: LlamaLogLevel, message: string) => {
    const text = message.trim();
    if (text === "") return;
    if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) logger.error({ source: "llama.cpp" }, text);
    else if (level === LlamaLogLevel.warn) logger.warn({ source: "llama.cpp" }, text);
    else logger.debug({ source: "llama.cpp" }, text);
  };
}
