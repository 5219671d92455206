import path from "node:path";

import {
  getLlama,
  GgufFileType,
  LlamaLogLevel,
  readGgufFileInfo,
  resolveChatWrapper,
  resolveModelFile,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
} from "node-llama-cpp";
import type { Logger } from "pino";

/** Settings every variant's model and context share, so a swap changes the weights and nothing else. */
export interface EngineOptions {
  /** Parallel sequences on the one context. */
  slots: number;
  /** CPU threads for evaluation. */
  threads: number;
  /** Tokens per slot. */
  contextSize: number;
  /** Download cache for `hf:` models. */
  modelsDirectory: string;
  /** node-llama-cpp's compute backend: `auto` uses a GPU when its prebuilt binary is installed. */
  gpu: "auto" | "cuda" | "vulkan" | false;
}

/** One rung of a quantization ladder. */
export interface VariantSpec {
  /** Quantization name such as `Q4_K_M`; when undefined it is read from the GGUF header on load. */
  quant?: string;
  /** A local path or a node-llama-cpp model URI such as `hf:<user>/<repo>:Q4_K_M`. */
  model: string;
}

/** Creates the one `Llama` instance every variant of a worker loads into, so they share its thread limit. */
export async function createLlama(options: EngineOptions, logger: Logger): Promise<Llama> {
  // build "never": a worker must not start compiling llama.cpp when no prebuilt binary fits the machine.
  return getLlama({
    gpu: options.gpu,
    build: "never",
    maxThreads: options.threads,
    logLevel: LlamaLogLevel.warn,
    logger: forwardLlamaLog(logger),
  });
}

/** Resolves a variant's model to a local file, downloading an `hf:` URI into the models directory first. */
export async function resolveModelPath(model: string, modelsDirectory: string, logger: Logger): Promise<string> {
  // A terminal gets node-llama-cpp's progress bar; logs (a pod, a child process) get a line per 10%.
  return resolveModelFile(model, {
    directory: modelsDirectory,
    cli: process.stderr.isTTY,
    onProgress: process.stderr.isTTY ? undefined : logDownloadProgress(logger, model),
  });
}

/**
 * One loaded variant and its slots: a model, a context with `slots` sequences, and the sequences not in
 * use. Which requests get a slot is the `SlotRouter`'s decision.
 */
export class Engine {
  readonly model: LlamaModel;
  readonly context: LlamaContext;
  readonly modelPath: string;
  readonly quant: string;
  readonly chatWrapper: ChatWrapper;
  readonly loadSeconds: number;
  readonly #sequences: readonly LlamaContextSequence[];
  readonly #freeSequences: LlamaContextSequence[];
  #idleWaiters: Array<() => void> = [];

  private constructor(init: {
    model: LlamaModel; context: LlamaContext; modelPath: string; quant: string; loadSeconds: number; sequences: LlamaContextSequence[];
  }) {
    this.model = init.model;
    this.context = init.context;
    this.modelPath = init.modelPath;
    this.quant = init.quant;
    this.loadSeconds = init.loadSeconds;
    this.chatWrapper = resolveChatWrapper(init.model);
    this.#sequences = init.sequences;
    this.#freeSequences = [...init.sequences];
  }

  /** Loads `modelPath` (already resolved to a local file) with the shared context settings. */
  static async load(llama: Llama, variant: VariantSpec, modelPath: string, options: EngineOptions, logger: Logger): Promise<Engine> {
    const started = performance.now();
    const model = await llama.loadModel({ modelPath });
    let context: LlamaContext;
    try {
      context = await model.createContext({
        sequences: options.slots,
        contextSize: options.contextSize,
        threads: options.threads,
        batchSize: Math.min(512, options.contextSize),
      });
    } catch (error) {
      await model.dispose();
      throw error;
    }
    const fileQuant = quantName(model.fileInfo.metadata.general.file_type);
    const quant = variant.quant ?? fileQuant ?? "unknown";
    if (variant.quant !== undefined && fileQuant !== null && fileQuant !== variant.quant) {
      logger.warn({ quant: variant.quant, fileQuant, model: path.basename(modelPath) }, "the GGUF header names another quantization than the ladder");
    }
    const sequences = Array.from({ length: options.slots }, () => context.getSequence());
    const loadSeconds = (performance.now() - started) / 1000;
    logger.info(
      { model: path.basename(modelPath), quant, gpu: llama.gpu, threads: options.threads, slots: options.slots, contextSize: options.contextSize, loadSeconds },
      "model loaded",
    );
    return new Engine({ model, context, modelPath, quant, loadSeconds, sequences });
  }

  get slots(): number {
    return this.#sequences.length;
  }

  get busySlots(): number {
    return this.#sequences.length - this.#freeSequences.length;
  }

  get freeSlots(): number {
    return this.#freeSequences.length;
  }

  get disposed(): boolean {
    return this.model.disposed;
  }

  /** Token cells in use and in total, for the KV cache usage ratio. */
  get kvCacheCells(): { used: number; capacity: number } {
    let used = 0;
    for (const sequence of this.#sequences) used += sequence.nextTokenIndex;
    return { used, capacity: this.context.contextSize * this.#sequences.length };
  }

  /** Takes a free sequence, or returns undefined when every slot is busy. */
  take(): LlamaContextSequence | undefined {
    return this.#freeSequences.pop();
  }

  /** Returns a sequence taken with `take`. */
  give(sequence: LlamaContextSequence): void {
    this.#freeSequences.push(sequence);
    if (this.busySlots > 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /** Resolves once no slot is in use. */
  whenIdle(): Promise<void> {
    if (this.busySlots === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Frees the context and the weights; the shared `Llama` instance stays. */
  async dispose(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
  }
}

/** Maps GGUF `general.file_type` to the usual quantization name, such as `Q4_K_M` or `F16`. */
export function quantName(fileType: number | undefined): string | null {
  if (fileType === undefined) return null;
  const name = GgufFileType[fileType];
  if (name === undefined) return null;
  return name.replace(/^(MOSTLY|ALL)_/, "");
}

/** Reads a GGUF file's quantization name from its header, without the tensors; null when the file type is unknown. */
export async function readGgufQuant(modelPath: string): Promise<string | null> {
  const info = await readGgufFileInfo(modelPath, { readTensorInfo: false, sourceType: "filesystem", logWarnings: false });
  return quantName(info.metadata.general.file_type);
}

/** Every quantization name `quantName` can return, such as `F16`, `Q8_0` or `Q4_K_M`. */
export function knownQuantNames(): string[] {
  return Object.values(GgufFileType)
    .filter((value): value is number => typeof value === "number")
    .map((value) => quantName(value))
    .filter((name): name is string => name !== null);
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
