/**
 * Minimal GGUF version 3 writer: a header, metadata key/values, tensor infos and
 * tensor data, all little-endian, with tensor data aligned to `general.alignment`.
 */
import { open, rename, rm, type FileHandle } from "node:fs/promises";

import { encodedByteLength, tensorTypeLayouts, type TensorType } from "./quantize.ts";

const ggufMagic = 0x46554747; // "GGUF" read as a little-endian uint32
const ggufVersion = 3;

const valueTypeIds = {
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
} as const;

export type GgufValue =
  | { type: "uint32"; value: number }
  | { type: "int32"; value: number }
  | { type: "float32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "string[]"; value: readonly string[] }
  | { type: "int32[]"; value: readonly number[] };

/** Metadata key/values, written in the object's key order. */
export type GgufMetadata = Readonly<Record<string, GgufValue>>;

export interface GgufTensor {
  name: string;
  /** Sizes innermost first, as ggml's `ne`: `dimensions[0]` is the row length. */
  dimensions: readonly number[];
  type: TensorType;
  /** Produces the encoded data when it is written, so one tensor is in memory at a time. */
  encode: () => Uint8Array;
}

export interface GgufFile {
  metadata: GgufMetadata;
  tensors: readonly GgufTensor[];
  alignment: number;
}

/** Writes the file to a temporary path next to `path` and renames it into place. Returns the size in bytes. */
export async function writeGguf(path: string, file: GgufFile): Promise<number> {
  const byteLengths = file.tensors.map((tensor) => tensorByteLength(tensor));
  const header = encodeHeader(file, byteLengths);
  const temporaryPath = `${path}.${process.pid}.partial`;
  const handle = await open(temporaryPath, "w");
  try {
    let size = await writeAll(handle, header);
    for (const [index, tensor] of file.tensors.entries()) {
      const data = tensor.encode();
      if (data.length !== byteLengths[index]) {
        throw new Error(`tensor ${tensor.name} encoded to ${data.length} bytes, expected ${byteLengths[index]}`);
      }
      size += await writeAll(handle, data);
      size += await writeAll(handle, new Uint8Array(paddingLength(size, file.alignment)));
    }
    await handle.close();
    await rename(temporaryPath, path);
    return size;
  } catch (error) {
    await handle.close().catch(() => undefined);
    await rm(temporaryPath, { force: true });
    throw error;
  }
}

export function tensorByteLength(tensor: GgufTensor): number {
  const rowLength = tensor.dimensions[0] ?? 1;
  const blockSize = tensorTypeLayouts[tensor.type].blockSize;
  if (rowLength % blockSize !== 0) {
    throw new RangeError(`tensor ${tensor.name}: ${tensor.type} rows need a multiple of ${blockSize} values, got ${rowLength}`);
  }
  const count = tensor.dimensions.reduce((product, size) => product * size, 1);
  return encodedByteLength(tensor.type, count);
}

async function writeAll(handle: FileHandle, data: Uint8Array): Promise<number> {
  let written = 0;
  while (written < data.length) {
    const result = await handle.write(data, written, data.length - written);
    written += result.bytesWritten;
  }
  return data.length;
}

function paddingLength(offset: number, alignment: number): number {
  return (alignment - (offset % alignment)) % alignment;
}

function encodeHeader(file: GgufFile, byteLengths: readonly number[]): Uint8Array {
  const output = new ByteWriter();
  const entries = Object.entries(file.metadata);
  output.uint32(ggufMagic);
  output.uint32(ggufVersion);
  output.uint64(file.tensors.length);
  output.uint64(entries.length);

  for (const [key, value] of entries) {
    output.string(key);
    writeValue(output, value);
  }

  // Tensor offsets are relative to the start of the data section and kept aligned.
  let dataOffset = 0;
  for (const [index, tensor] of file.tensors.entries()) {
    output.string(tensor.name);
    output.uint32(tensor.dimensions.length);
    for (const size of tensor.dimensions) {
      output.uint64(size);
    }
    output.uint32(tensorTypeLayouts[tensor.type].ggmlType);
    output.uint64(dataOffset);
    dataOffset += (byteLengths[index] ?? 0);
    dataOffset += paddingLength(dataOffset, file.alignment);
  }

  output.bytes(new Uint8Array(paddingLength(output.length, file.alignment)));
  return output.toBytes();
}

function writeValue(output: ByteWriter, entry: GgufValue): void {
  switch (entry.type) {
    case "uint32":
      output.uint32(valueTypeIds.uint32);
      output.uint32(entry.value);
      return;
    case "int32":
      output.uint32(valueTypeIds.int32);
      output.int32(entry.value);
      return;
    case "float32":
      output.uint32(valueTypeIds.float32);
      output.float32(entry.value);
      return;
    case "bool":
      output.uint32(valueTypeIds.bool);
      output.bytes(Uint8Array.of(entry.value ? 1 : 0));
      return;
    case "string":
      output.uint32(valueTypeIds.string);
      output.string(entry.value);
      return;
    case "string[]":
      output.uint32(valueTypeIds.array);
      output.uint32(valueTypeIds.string);
      output.uint64(entry.value.length);
      entry.value.forEach((item) => output.string(item));
      return;
    case "int32[]":
      output.uint32(valueTypeIds.array);
      output.uint32(valueTypeIds.int32);
      output.uint64(entry.value.length);
      entry.value.forEach((item) => output.int32(item));
      return;
  }
}

/** Growable little-endian byte buffer. */
class ByteWriter {
  private buffer = new Uint8Array(4096);
  private view = new DataView(this.buffer.buffer);
  length = 0;

  uint32(value: number): void {
    this.reserve(4).setUint32(this.length - 4, value, true);
  }

  int32(value: number): void {
    this.reserve(4).setInt32(this.length - 4, value, true);
  }

  uint64(value: number): void {
    this.reserve(8).setBigUint64(this.length - 8, BigInt(value), true);
  }

  float32(value: number): void {
    this.reserve(4).setFloat32(this.length - 4, value, true);
  }

  /** GGUF strings are a uint64 byte length followed by UTF-8 bytes, without a terminator. */
  string(value: string): void {
    const encoded = new TextEncoder().encode(value);
    this.uint64(encoded.length);
    this.bytes(encoded);
  }

  bytes(value: Uint8Array): void {
    this.reserve(value.length);
    this.buffer.set(value, this.length - value.length);
  }

  toBytes(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }

  /** Grows the buffer for `count` more bytes, advances `length` past them and returns the view. */
  private reserve(count: number): DataView {
    const required = this.length + count;
    if (required > this.buffer.length) {
      const grown = new Uint8Array(Math.max(required, this.buffer.length * 2));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
      this.view = new DataView(grown.buffer);
    }
    this.length = required;
    return this.view;
  }
}
