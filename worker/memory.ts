import { readFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import os from "node:os";

import { GgufInsights, readGgufFileInfo, type Llama } from "node-llama-cpp";

import type { EngineOptions } from "./engine.ts";

/** `overlap` loads the new variant beside the old one; `drain` unloads the old one first. */
export type SwapMode = "overlap" | "drain";

/** Share of the estimate added on top of it, because estimates of context memory are rough. */
const estimateMargin = 0.2;

/** A variant's need for one kind of memory against what is free now, in bytes. */
export interface MemoryCheck {
  requiredBytes: number;
  /** Headroom kept free on top of `requiredBytes`. */
  marginBytes: number;
  freeBytes: number;
  fits: boolean;
}

export interface MemoryPlan {
  mode: SwapMode;
  ram: MemoryCheck;
  /** Present when the model would load onto a GPU. */
  vram?: MemoryCheck;
  /** `gguf` for node-llama-cpp's estimate from the file's tensors, `file size` when that failed. */
  estimate: "gguf" | "file size";
}

/**
 * Decides whether a variant can load while the current one stays loaded. The old model's memory already
 * counts as used, so the new variant's estimated need (weights plus a context with the same slots and
 * size) must fit in what is free now. The margin on top is a fifth of the estimate plus the padding
 * node-llama-cpp keeps for its own estimates.
 */
export async function planSwapMemory(llama: Llama, modelPath: string, options: EngineOptions): Promise<MemoryPlan> {
  const onGpu = llama.gpu !== false;
  const { need, estimate } = await estimateNeed(llama, modelPath, options, onGpu);
  const ram = check(need.cpuRam, llama.ramPaddingSize, freeRamBytes());
  if (!onGpu) return { mode: ram.fits ? "overlap" : "drain", ram, estimate };
  const vram = check(need.gpuVram, llama.vramPaddingSize, (await llama.getVramState()).free);
  return { mode: ram.fits && vram.fits ? "overlap" : "drain", ram, vram, estimate };
}

async function estimateNeed(llama: Llama, modelPath: string, options: EngineOptions, onGpu: boolean) {
  try {
    const fileInfo = await readGgufFileInfo(modelPath, { sourceType: "filesystem", logWarnings: false });
    const insights = await GgufInsights.from(fileInfo, llama);
    // A GPU worker loads with gpuLayers "auto", which offloads every layer when they fit.
    const gpuLayers = onGpu ? insights.totalLayers : 0;
    const model = await insights.estimateModelResourceRequirementsV2({ gpuLayers, useMmap: llama.supportsMmap });
    const context = await insights.estimateContextResourceRequirementsV2({
      contextSize: options.contextSize,
      modelGpuLayers: gpuLayers,
      batchSize: Math.min(512, options.contextSize),
      sequences: options.slots,
    });
    const need = { cpuRam: model.cpuRam + context.cpuRam, gpuVram: model.gpuVram + context.gpuVram };
    return { need, estimate: "gguf" as const };
  } catch {
    // Without tensor information, the weights alone bound the need from below; the margin covers the rest.
    const { size } = await stat(modelPath);
    const need = onGpu ? { cpuRam: 0, gpuVram: size } : { cpuRam: size, gpuVram: 0 };
    return { need, estimate: "file size" as const };
  }
}

function check(requiredBytes: number, paddingBytes: number, freeBytes: number): MemoryCheck {
  const marginBytes = Math.ceil(requiredBytes * estimateMargin + paddingBytes);
  return { requiredBytes, marginBytes, freeBytes, fits: requiredBytes + marginBytes <= freeBytes };
}

/**
 * Returns free RAM: the system's, or what the cgroup v2 memory limit leaves when that is lower, because
 * inside a container `os.freemem()` reports the host's free memory, but the container is killed at its own limit.
 */
export function freeRamBytes(cgroupDirectory = "/sys/fs/cgroup"): number {
  const systemFree = os.freemem();
  const limit = readCgroupNumber(`${cgroupDirectory}/memory.max`);
  const current = readCgroupNumber(`${cgroupDirectory}/memory.current`);
  if (limit === undefined || current === undefined) return systemFree;
  return Math.max(0, Math.min(systemFree, limit - current));
}

function readCgroupNumber(file: string): number | undefined {
  try {
    const text = readFileSync(file, "utf8").trim();
    const value = Number(text);
    return text === "max" || !Number.isFinite(value) ? undefined : value;
  } catch {
    return undefined;
  }
}
