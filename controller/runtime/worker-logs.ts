import type { Level, Logger } from "pino";

/** One parsed line of a worker's pino output. */
export interface WorkerLogEntry {
  /** pino's numeric level: 30 is info, 50 is error. */
  level: number;
  msg: string | undefined;
  fields: Record<string, unknown>;
}

// The controller's logger writes its own time, pid, hostname and name. Repeating the worker's would
// put the same key twice in one JSON line.
const ownFields = new Set(["level", "time", "pid", "hostname", "name", "msg"]);

/** Parses a JSON log line. Anything else, such as a stack trace on stderr, gives undefined. */
export function parseWorkerLogLine(line: string): WorkerLogEntry | undefined {
  if (!line.startsWith("{")) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return undefined;
  const record = parsed as Record<string, unknown>;
  const fields = Object.fromEntries(Object.entries(record).filter(([key]) => !ownFields.has(key)));
  return {
    level: typeof record.level === "number" ? record.level : 30,
    msg: typeof record.msg === "string" ? record.msg : undefined,
    fields,
  };
}

/** Writes a worker's log line to the controller's logger at the worker's level. Lines that are not JSON go out as info. */
export function forwardWorkerLog(logger: Logger, line: string, entry: WorkerLogEntry | undefined): void {
  if (entry === undefined) {
    if (line.trim() !== "") logger.info(line);
    return;
  }
  const label = (logger.levels.labels[entry.level] ?? "info") as Level;
  logger[label](entry.fields, entry.msg);
}

/** Reads the reason out of a worker's error line: the error's message when it logged one, else the line's message. */
export function errorReason(entry: WorkerLogEntry): string | undefined {
  const error = entry.fields.err;
  if (error !== null && typeof error === "object" && typeof (error as { message?: unknown }).message === "string") {
    const message = (error as { message: string }).message;
    return entry.msg === undefined ? message : `${entry.msg}: ${message}`;
  }
  return entry.msg;
}
