import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/**
 * Counts the CPUs this process may really use: the cgroup v2 `cpu.max` quota when one is set (containers
 * often see every host core but may only use a few), otherwise `os.availableParallelism()`.
 * node-llama-cpp's own default oversubscribes small machines badly, so the worker always passes this
 * number, or the operator's `--threads`, explicitly.
 */
export function usableCpuCount(cpuMaxPath = "/sys/fs/cgroup/cpu.max"): number {
  const parallelism = availableParallelism();
  const quota = readCgroupQuota(cpuMaxPath);
  if (quota === undefined) return parallelism;
  return Math.max(1, Math.min(parallelism, Math.floor(quota)));
}

/** Parses cgroup v2 `cpu.max` ("<quota> <period>" or "max <period>") into a CPU count. */
export function parseCpuMax(text: string): number | undefined {
  const [quota, period] = text.trim().split(/\s+/);
  if (quota === undefined || quota === "max" || period === undefined) return undefined;
  const quotaMicros = Number(quota);
  const periodMicros = Number(period);
  if (!Number.isFinite(quotaMicros) || !Number.isFinite(periodMicros) || periodMicros <= 0) return undefined;
  return quotaMicros / periodMicros;
}

function readCgroupQuota(path: string): number | undefined {
  try {
    return parseCpuMax(readFileSync(path, "utf8"));
  } catch {
    return undefined;
  }
}
