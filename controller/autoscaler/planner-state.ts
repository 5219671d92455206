import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";

import type { Logger } from "pino";
import { z } from "zod";

import type { PlannerState } from "./types.ts";

/**
 * The planner's state file: each pool's `PlannerState` as JSON, unset times as null. Loading it after
 * a restart keeps the pressure timers, the dwell and the cool-downs running, so a restart neither
 * allows an early step nor repeats a change it just made.
 */

const time = z.number().nullable().transform((value) => value ?? undefined);

const stateSchema = z.object({
  pressure: z.number().min(0),
  demand: z.number().min(0),
  highSince: time,
  lowSince: time,
  lastStepAt: time,
  lastScaleAt: time,
  observedAt: time,
});

const fileSchema = z.object({
  version: z.literal(1),
  pools: z.record(z.string(), stateSchema),
});

export type PlannerStateLogger = Pick<Logger, "warn" | "error">;

/**
 * Reads the state of each pool from `path`. A missing file gives an empty map. A file that cannot be
 * read or parsed gives an empty map and a warning, so a damaged file never stops the controller. The
 * planner then starts its timers afresh.
 */
export function loadPlannerStates(path: string, logger: PlannerStateLogger): Map<string, PlannerState> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      logger.warn({ err: error, path }, "Failed to read the planner state file; starting every pool's timers afresh");
    }
    return new Map();
  }

  let parsed: z.infer<typeof fileSchema>;
  try {
    parsed = fileSchema.parse(JSON.parse(text));
  } catch (error) {
    logger.warn({ err: error, path }, "Ignored an invalid planner state file; starting every pool's timers afresh");
    return new Map();
  }
  return new Map(Object.entries(parsed.pools));
}

/**
 * Writes the state of each pool to `path`, creating its folder when missing: to a temporary file,
 * synced, then renamed over `path`, so a crash leaves either the old file or the new one. A failed
 * write is logged and not thrown, because the planner keeps its state in memory and the next save
 * tries again.
 */
export function savePlannerStates(path: string, states: ReadonlyMap<string, PlannerState>, logger: PlannerStateLogger): void {
  const pools: Record<string, unknown> = {};
  for (const [pool, state] of states) pools[pool] = withNulls(state);
  const text = `${JSON.stringify({ version: 1, pools }, null, 2)}\n`;
  const temporaryPath = `${path}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true });
    const descriptor = openSync(temporaryPath, "w");
    try {
      writeSync(descriptor, text);
      fsyncSync(descriptor);
    } finally {
      closeSync(descriptor);
    }
    renameSync(temporaryPath, path);
  } catch (error) {
    logger.error({ err: error, path }, "Failed to save the planner state; it is kept in memory and the next save writes it again");
  }
}

function withNulls(state: PlannerState): Record<string, number | null> {
  return {
    pressure: state.pressure,
    demand: state.demand,
    highSince: state.highSince ?? null,
    lowSince: state.lowSince ?? null,
    lastStepAt: state.lastStepAt ?? null,
    lastScaleAt: state.lastScaleAt ?? null,
    observedAt: state.observedAt ?? null,
  };
}
