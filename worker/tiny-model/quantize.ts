/**
 * Encoders from float32 values to the ggml tensor types that tiny models use.
 * The block layouts and rounding follow ggml's reference quantizers
 * (`quantize_row_q8_0_ref` and `quantize_row_q4_0_ref` in llama.cpp's ggml-quants.c).
 */

export type TensorType = "f32" | "f16" | "q8_0" | "q4_0";

interface TensorTypeLayout {
  /** ggml_type enum value written into GGUF tensor infos. */
  ggmlType: number;
  /** Number of values that share one block. */
  blockSize: number;
  /** Bytes that one block occupies. */
  blockBytes: number;
}

export const tensorTypeLayouts: Readonly<Record<TensorType, TensorTypeLayout>> = {
  f32: { ggmlType: 0, blockSize: 1, blockBytes: 4 },
  f16: { ggmlType: 1, blockSize: 1, blockBytes: 2 },
  q4_0: { ggmlType: 2, blockSize: 32, blockBytes: 18 },
  q8_0: { ggmlType: 8, blockSize: 32, blockBytes: 34 },
};

const quantBlockSize = 32;

/** Returns the encoded size of `count` values, which must fill whole blocks. */
export function encodedByteLength(type: TensorType, count: number): number {
  const layout = tensorTypeLayouts[type];
  if (count % layout.blockSize !== 0) {
    throw new RangeError(`${type} needs a multiple of ${layout.blockSize} values, got ${count}`);
  }
  return (count / layout.blockSize) * layout.blockBytes;
}

export function encodeTensor(type: TensorType, values: Float32Array): Uint8Array {
  switch (type) {
    case "f32":
      return encodeFloat32(values);
    case "f16":
      return encodeFloat16(values);
    case "q8_0":
      return encodeQ8_0(values);
    case "q4_0":
      return encodeQ4_0(values);
  }
}

export function encodeFloat32(values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) {
    view.setFloat32(i * 4, values[i] ?? 0, true);
  }
  return bytes;
}

export function encodeFloat16(values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(values.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) {
    view.setUint16(i * 2, toFloat16Bits(values[i] ?? 0), true);
  }
  return bytes;
}

/** Encodes blocks of 32 values as an f16 scale `max|x| / 127` followed by 32 int8 multiples of it. */
export function encodeQ8_0(values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(encodedByteLength("q8_0", values.length));
  const view = new DataView(bytes.buffer);
  for (let block = 0; block * quantBlockSize < values.length; block++) {
    const start = block * quantBlockSize;
    const offset = block * tensorTypeLayouts.q8_0.blockBytes;

    let absoluteMax = 0;
    for (let j = 0; j < quantBlockSize; j++) {
      absoluteMax = Math.max(absoluteMax, Math.abs(values[start + j] ?? 0));
    }
    const scale = Math.fround(absoluteMax / 127);
    const inverseScale = scale === 0 ? 0 : Math.fround(1 / scale);

    view.setUint16(offset, toFloat16Bits(scale), true);
    for (let j = 0; j < quantBlockSize; j++) {
      const scaled = Math.fround((values[start + j] ?? 0) * inverseScale);
      view.setInt8(offset + 2 + j, roundHalfAwayFromZero(scaled));
    }
  }
  return bytes;
}

/**
 * Encodes blocks of 32 values as an f16 scale followed by 16 bytes of 4-bit quants.
 * The scale is `max / -8`, where `max` is the signed value of largest magnitude, so that
 * value maps exactly to quant 0. Byte j contains element j in its low nibble and element
 * j + 16 in its high nibble, each stored as `x / scale + 8`.
 */
export function encodeQ4_0(values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(encodedByteLength("q4_0", values.length));
  const view = new DataView(bytes.buffer);
  const halfBlock = quantBlockSize / 2;
  for (let block = 0; block * quantBlockSize < values.length; block++) {
    const start = block * quantBlockSize;
    const offset = block * tensorTypeLayouts.q4_0.blockBytes;

    let absoluteMax = 0;
    let signedMax = 0;
    for (let j = 0; j < quantBlockSize; j++) {
      const value = values[start + j] ?? 0;
      if (Math.abs(value) > absoluteMax) {
        absoluteMax = Math.abs(value);
        signedMax = value;
      }
    }
    const scale = Math.fround(signedMax / -8);
    const inverseScale = scale === 0 ? 0 : Math.fround(1 / scale);

    view.setUint16(offset, toFloat16Bits(scale), true);
    for (let j = 0; j < halfBlock; j++) {
      const low = toNibble(Math.fround((values[start + j] ?? 0) * inverseScale));
      const high = toNibble(Math.fround((values[start + halfBlock + j] ?? 0) * inverseScale));
      bytes[offset + 2 + j] = low | (high << 4);
    }
  }
  return bytes;
}

/** Matches C's `MIN(15, (int8_t)(x + 8.5f))`, which truncates toward zero. */
function toNibble(scaled: number): number {
  return Math.min(15, Math.trunc(Math.fround(scaled + 8.5)));
}

/** Matches C's `roundf`, which rounds halfway cases away from zero. */
function roundHalfAwayFromZero(value: number): number {
  return Math.sign(value) * Math.round(Math.abs(value));
}

const float32Scratch = new Float32Array(1);
const float32BitsScratch = new Uint32Array(float32Scratch.buffer);

/** Converts a number to IEEE 754 half-precision bits, rounding to nearest even. */
export function toFloat16Bits(value: number): number {
  float32Scratch[0] = value;
  const bits = float32BitsScratch[0] ?? 0;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;

  if (exponent === 0xff) {
    return sign | 0x7c00 | (mantissa === 0 ? 0 : 0x200);
  }
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) {
    return sign | 0x7c00;
  }
  if (halfExponent <= 0) {
    return sign | toSubnormalHalfMantissa(mantissa | 0x800000, 14 - halfExponent);
  }

  // A carry out of the mantissa correctly bumps the exponent, up to infinity.
  const truncated = (halfExponent << 10) | (mantissa >>> 13);
  return sign | roundShifted(truncated, mantissa & 0x1fff, 0x1000);
}

function toSubnormalHalfMantissa(fullMantissa: number, shift: number): number {
  if (shift > 24) {
    return 0;
  }
  const truncated = fullMantissa >>> shift;
  const remainder = fullMantissa & ((1 << shift) - 1);
  return roundShifted(truncated, remainder, 1 << (shift - 1));
}

function roundShifted(truncated: number, remainder: number, halfway: number): number {
  const roundsUp = remainder > halfway || (remainder === halfway && (truncated & 1) === 1);
  return roundsUp ? truncated + 1 : truncated;
}
