/**
 * Tensors of a tiny llama model: random weights drawn from a seeded generator, plus the
 * constant residual dimension described in index.ts.
 */
import type { GgufTensor } from "./gguf-writer.ts";
import { encodeTensor, tensorTypeLayouts, type TensorType } from "./quantize.ts";
import type { Vocabulary } from "./vocabulary.ts";

export interface ModelShape {
  embedding: number;
  layers: number;
  headCount: number;
  headDimension: number;
  feedForwardLength: number;
  contextLength: number;
  vocabulary: Vocabulary;
}

export interface WeightOptions {
  quant: Exclude<TensorType, "f32">;
  seed: number;
  eosWeight: number;
}

/** Value of the constant dimension in every token embedding. */
const constantValue = 1;

/** Output weight of the constant dimension for tokens that a reply must never contain. */
const blockedTokenWeight = -50;

/**
 * Combined scale of all blocks' output projections. Each block gets this divided by
 * sqrt(layers), so the residual stream's spread changes little with depth, and neither
 * does the normalized constant dimension that scales the logit biases. At 0.5, replies
 * barely depended on the prompt because the last token's embedding dominated.
 */
const residualGain = 2;

type Fill = (values: Float32Array, random: Random) => void;

export function buildTensors(shape: ModelShape, options: WeightOptions): GgufTensor[] {
  const { embedding, feedForwardLength } = shape;
  const vocabularySize = shape.vocabulary.tokens.length;
  const constantDimension = embedding - 1;
  const tensor = (name: string, dimensions: [number, number], fill: Fill): GgufTensor =>
    weightTensor(name, dimensions, options, fill);
  const readsResidual = fillLayerInput(embedding, constantDimension);
  const branchGain = residualGain / Math.sqrt(shape.layers);
  const writesResidual = (rowLength: number): Fill => fillLayerOutput(rowLength, branchGain, constantDimension);

  const tensors = [
    tensor("token_embd.weight", [embedding, vocabularySize], fillTokenEmbedding(embedding, constantDimension)),
    normTensor("output_norm.weight", embedding),
    tensor("output.weight", [embedding, vocabularySize], fillOutput(shape, options.eosWeight, constantDimension)),
  ];
  for (let layer = 0; layer < shape.layers; layer++) {
    const prefix = `blk.${layer}`;
    tensors.push(
      normTensor(`${prefix}.attn_norm.weight`, embedding),
      tensor(`${prefix}.attn_q.weight`, [embedding, embedding], readsResidual),
      tensor(`${prefix}.attn_k.weight`, [embedding, embedding], readsResidual),
      tensor(`${prefix}.attn_v.weight`, [embedding, embedding], readsResidual),
      tensor(`${prefix}.attn_output.weight`, [embedding, embedding], writesResidual(embedding)),
      normTensor(`${prefix}.ffn_norm.weight`, embedding),
      tensor(`${prefix}.ffn_gate.weight`, [embedding, feedForwardLength], readsResidual),
      tensor(`${prefix}.ffn_up.weight`, [embedding, feedForwardLength], readsResidual),
      tensor(`${prefix}.ffn_down.weight`, [feedForwardLength, embedding], writesResidual(feedForwardLength)),
    );
  }
  return tensors;
}

/** Creates a 2D weight in the requested quant, or in f16 when its rows do not fill whole quant blocks. */
function weightTensor(name: string, dimensions: [number, number], options: WeightOptions, fill: Fill): GgufTensor {
  const [rowLength, rows] = dimensions;
  const fitsBlocks = rowLength % tensorTypeLayouts[options.quant].blockSize === 0;
  const type: TensorType = fitsBlocks ? options.quant : "f16";
  return {
    name,
    dimensions,
    type,
    encode: () => {
      const values = new Float32Array(rowLength * rows);
      fill(values, new Random(options.seed, name));
      return encodeTensor(type, values);
    },
  };
}

function normTensor(name: string, length: number): GgufTensor {
  return { name, dimensions: [length], type: "f32", encode: () => encodeTensor("f32", new Float32Array(length).fill(1)) };
}

function fillTokenEmbedding(embedding: number, constantDimension: number): Fill {
  return (values, random) => {
    // Unit variance, like the normalized activations the blocks see.
    random.fillUniform(values, Math.sqrt(3));
    for (let offset = constantDimension; offset < values.length; offset += embedding) {
      values[offset] = constantValue;
    }
  };
}

/** Fills a matrix that reads the normalized residual stream, ignoring the constant dimension. */
function fillLayerInput(embedding: number, constantDimension: number): Fill {
  return (values, random) => {
    random.fillUniform(values, Math.sqrt(3 / embedding));
    for (let offset = constantDimension; offset < values.length; offset += embedding) {
      values[offset] = 0;
    }
  };
}

/** Fills a matrix that adds to the residual stream, leaving the constant dimension unchanged. */
function fillLayerOutput(rowLength: number, gain: number, constantDimension: number): Fill {
  return (values, random) => {
    random.fillUniform(values, gain * Math.sqrt(3 / rowLength));
    values.fill(0, constantDimension * rowLength, (constantDimension + 1) * rowLength);
  };
}

/** Fills the output projection, whose constant-dimension weights act as per-token logit biases. */
function fillOutput(shape: ModelShape, eosWeight: number, constantDimension: number): Fill {
  const { embedding, vocabulary } = shape;
  return (values, random) => {
    random.fillUniform(values, Math.sqrt(3 / embedding));
    vocabulary.tokens.forEach((_, token) => {
      const bias = vocabulary.printable[token] === true ? 0 : blockedTokenWeight;
      values[token * embedding + constantDimension] = token === vocabulary.messageEndId ? eosWeight : bias;
    });
  };
}

/** Mulberry32 generator, seeded from the model seed and a tensor name so each tensor is independent. */
class Random {
  private state: number;

  constructor(seed: number, name: string) {
    let hash = 0x811c9dc5; // FNV-1a offset basis
    for (const byte of new TextEncoder().encode(name)) {
      hash = Math.imul(hash ^ byte, 0x01000193);
    }
    this.state = (seed ^ hash) >>> 0;
  }

  nextUint32(): number {
    this.state = (this.state + 0x6d2b79f5) | 0;
    let mixed = Math.imul(this.state ^ (this.state >>> 15), this.state | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return (mixed ^ (mixed >>> 14)) >>> 0;
  }

  /** Fills `values` uniformly from [-amplitude, amplitude), whose standard deviation is amplitude / sqrt(3). */
  fillUniform(values: Float32Array, amplitude: number): void {
    const scale = (2 * amplitude) / 0x100000000;
    for (let i = 0; i < values.length; i++) {
      values[i] = this.nextUint32() * scale - amplitude;
    }
  }
}
