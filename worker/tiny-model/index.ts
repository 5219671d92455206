/**
 * Generator of small random-weight llama GGUF models that llama.cpp loads and runs,
 * for tests and offline smoke tests. The output is deterministic for a given set of options.
 *
 * The weights are random except for one residual dimension, the "constant dimension".
 * Every token embedding sets it to the same value, and no layer reads or writes it, so
 * it reaches the final norm unchanged for every token. The output projection uses it as
 * a per-token logit bias. A large negative weight makes a token unreachable, which keeps
 * replies to printable ASCII, so every reply token decodes to whole UTF-8 characters.
 * The weight on `<|im_end|>`, `eosWeight`, sets how soon a reply ends.
 */
import { writeGguf, type GgufMetadata } from "./gguf-writer.ts";
import { buildVocabulary, chatMlTemplate } from "./vocabulary.ts";
import { buildTensors, type ModelShape } from "./weights.ts";

export type TinyModelQuant = "f16" | "q8_0" | "q4_0";

export const tinyModelQuants: readonly TinyModelQuant[] = ["f16", "q8_0", "q4_0"];

export interface TinyModelOptions {
  outPath: string;
  /** Type of the weight matrices. Norms are always f32. */
  quant: TinyModelQuant;
  /** Number of transformer blocks. */
  layers: number;
  /** Width of the residual stream, a multiple of 32 (the quant block size). */
  embedding: number;
  /** Seed of the weights, an unsigned 32-bit integer. */
  seed: number;
  /**
   * Output weight of the constant dimension in the `<|im_end|>` row. The end-of-reply
   * logit gains this times the constant dimension after the final norm, which measured
   * 0.4 to 0.8 for seed 1 at sizes from 1x32 to 8x512. The other tokens' logits spread
   * with a standard deviation near 1. Larger values end replies sooner, and at 0 or less
   * most greedy replies run to their token limit.
   */
  eosWeight: number;
  /** Trained context length written to `llama.context_length`. */
  contextLength?: number;
}

export interface TinyModelSummary {
  outPath: string;
  quant: TinyModelQuant;
  /** File size in bytes. */
  bytes: number;
  parameters: number;
  layers: number;
  embedding: number;
  headCount: number;
  feedForwardLength: number;
  vocabularySize: number;
  contextLength: number;
}

/**
 * Defaults for `writeTinyModel`. With them, greedy replies to short chat prompts ended by
 * themselves after 2 to 57 tokens (50 prompts, node-llama-cpp 3.21.1 on CPU).
 */
export const tinyModelDefaults = {
  quant: "q8_0",
  layers: 2,
  embedding: 64,
  seed: 1,
  eosWeight: 1.6,
  contextLength: 4096,
} as const satisfies Required<Omit<TinyModelOptions, "outPath">>;

/** Accepted ranges. The upper bounds keep a generated file under 1 GB, even in f16. */
export const tinyModelLimits = {
  layers: { min: 1, max: 32 },
  embedding: { min: 32, max: 1024, multipleOf: 32 },
  seed: { min: 0, max: 0xffffffff },
  eosWeight: { min: -100, max: 100 },
  contextLength: { min: 32, max: 1_048_576 },
} as const;

export class InvalidTinyModelOptionError extends Error {
  override name = "InvalidTinyModelOptionError";

  constructor(
    readonly option: keyof TinyModelOptions,
    message: string,
  ) {
    super(message);
  }
}

export interface InvalidOption {
  option: keyof TinyModelOptions;
  /** Description of the accepted values, for example "a whole number from 1 to 32". */
  expected: string;
}

/** Returns the first option outside its accepted values, or undefined when all are valid. */
export function findInvalidOption(options: TinyModelOptions): InvalidOption | undefined {
  const { layers, embedding, seed, eosWeight, contextLength } = tinyModelLimits;
  if (!tinyModelQuants.includes(options.quant)) {
    return { option: "quant", expected: `one of ${tinyModelQuants.join(", ")}` };
  }
  if (!isIntegerInRange(options.layers, layers)) {
    return { option: "layers", expected: `a whole number from ${layers.min} to ${layers.max}` };
  }
  if (!isIntegerInRange(options.embedding, embedding) || options.embedding % embedding.multipleOf !== 0) {
    const range = `from ${embedding.min} to ${embedding.max}`;
    return { option: "embedding", expected: `a multiple of ${embedding.multipleOf} ${range}` };
  }
  if (!isIntegerInRange(options.seed, seed)) {
    return { option: "seed", expected: `a whole number from ${seed.min} to ${seed.max}` };
  }
  if (!Number.isFinite(options.eosWeight) || options.eosWeight < eosWeight.min || options.eosWeight > eosWeight.max) {
    return { option: "eosWeight", expected: `a number from ${eosWeight.min} to ${eosWeight.max}` };
  }
  if (options.contextLength !== undefined && !isIntegerInRange(options.contextLength, contextLength)) {
    return { option: "contextLength", expected: `a whole number from ${contextLength.min} to ${contextLength.max}` };
  }
  return undefined;
}

function isIntegerInRange(value: number, range: { min: number; max: number }): boolean {
  return Number.isInteger(value) && value >= range.min && value <= range.max;
}

/** Writes a tiny model to `options.outPath`, replacing any existing file. */
export async function writeTinyModel(options: TinyModelOptions): Promise<TinyModelSummary> {
  const invalid = findInvalidOption(options);
  if (invalid !== undefined) {
    const value = String(options[invalid.option]);
    throw new InvalidTinyModelOptionError(invalid.option, `Invalid ${invalid.option}: ${value}. Expected ${invalid.expected}.`);
  }

  const shape = describeShape(options);
  const tensors = buildTensors(shape, options);
  const bytes = await writeGguf(options.outPath, {
    metadata: buildMetadata(shape, options),
    tensors,
    alignment: ggufAlignment,
  });

  return {
    outPath: options.outPath,
    quant: options.quant,
    bytes,
    parameters: tensors.reduce((sum, tensor) => sum + elementCount(tensor.dimensions), 0),
    layers: options.layers,
    embedding: options.embedding,
    headCount: shape.headCount,
    feedForwardLength: shape.feedForwardLength,
    vocabularySize: shape.vocabulary.tokens.length,
    contextLength: shape.contextLength,
  };
}

const ggufAlignment = 32;

/** `general.file_type` values (llama.cpp's `llama_ftype`) for files mostly of one type. */
const fileTypes: Record<TinyModelQuant, number> = { f16: 1, q4_0: 2, q8_0: 7 };

function describeShape(options: TinyModelOptions): ModelShape {
  // Head dimension 16 keeps at least 2 heads at the minimum width of 32.
  const headDimension = options.embedding <= 64 ? 16 : 32;
  return {
    embedding: options.embedding,
    layers: options.layers,
    headCount: options.embedding / headDimension,
    headDimension,
    feedForwardLength: options.embedding * 3,
    contextLength: options.contextLength ?? tinyModelDefaults.contextLength,
    vocabulary: buildVocabulary(),
  };
}

function buildMetadata(shape: ModelShape, options: TinyModelOptions): GgufMetadata {
  const { vocabulary } = shape;
  const uint32 = (value: number) => ({ type: "uint32", value }) as const;
  const float32 = (value: number) => ({ type: "float32", value }) as const;
  const string = (value: string) => ({ type: "string", value }) as const;
  return {
    "general.architecture": string("llama"),
    "general.name": string(`spillway-tiny-${shape.layers}x${shape.embedding}-${options.quant}-seed${options.seed}`),
    "general.alignment": uint32(ggufAlignment),
    "general.file_type": uint32(fileTypes[options.quant]),
    "general.quantization_version": uint32(2),
    "llama.vocab_size": uint32(vocabulary.tokens.length),
    "llama.context_length": uint32(shape.contextLength),
    "llama.embedding_length": uint32(shape.embedding),
    "llama.block_count": uint32(shape.layers),
    "llama.feed_forward_length": uint32(shape.feedForwardLength),
    "llama.attention.head_count": uint32(shape.headCount),
    "llama.attention.head_count_kv": uint32(shape.headCount),
    "llama.rope.dimension_count": uint32(shape.headDimension),
    "llama.rope.freq_base": float32(10000),
    "llama.attention.layer_norm_rms_epsilon": float32(1e-5),
    "tokenizer.ggml.model": string("gpt2"),
    "tokenizer.ggml.pre": string("gpt-2"),
    "tokenizer.ggml.tokens": { type: "string[]", value: vocabulary.tokens },
    "tokenizer.ggml.token_type": { type: "int32[]", value: vocabulary.tokenTypes },
    "tokenizer.ggml.merges": { type: "string[]", value: vocabulary.merges },
    "tokenizer.ggml.bos_token_id": uint32(vocabulary.endOfTextId),
    "tokenizer.ggml.eos_token_id": uint32(vocabulary.messageEndId),
    "tokenizer.ggml.eot_token_id": uint32(vocabulary.messageEndId),
    "tokenizer.ggml.padding_token_id": uint32(vocabulary.endOfTextId),
    "tokenizer.ggml.add_bos_token": { type: "bool", value: false },
    "tokenizer.chat_template": string(chatMlTemplate),
  };
}

function elementCount(dimensions: readonly number[]): number {
  return dimensions.reduce((product, size) => product * size, 1);
}
