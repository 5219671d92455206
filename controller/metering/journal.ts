import { appendFileSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";

import type { Logger } from "pino";
import { z } from "zod";

/**
 * The ledger's file: JSON lines, one entry each. A running ledger appends one line per change (a
 * request's usage, or one replica-time accrual split over tenants), and rewrites the file as a
 * snapshot of its buckets at start and whenever the appended lines outgrow the last snapshot.
 *
 * Each line is written in one synchronous append before the ledger call returns, and a snapshot
 * replaces the file by an atomic rename, so after a crash the file contains every change once. The
 * exception is a line cut short by the crash: replay skips it with a warning, and that one change
 * is lost.
 */

const count = z.int().min(0);
const seriesFields = {
  tenant: z.string(),
  pool: z.string(),
  backend: z.enum(["local", "gemini"]),
  quant: z.string().nullable(),
};
const bucketFields = {
  minute: z.int(),
  ...seriesFields,
  requests: count,
  promptTokens: count,
  cachedPromptTokens: count,
  completionTokens: count,
  spendNanoUsd: count,
  geminiEquivalentNanoUsd: count,
};

const entrySchema = z.discriminatedUnion("type", [
  /** One request's usage. On replay a local one also joins its pool's attribution window. */
  z.strictObject({ type: z.literal("usage"), ...bucketFields }),
  /** One replica-time accrual: its cost per tenant and quant. On replay it clears the pool's window. */
  z.strictObject({
    type: z.literal("accrual"),
    minute: z.int(),
    pool: z.string(),
    shares: z.array(z.strictObject({ tenant: z.string(), quant: z.string().nullable(), spendNanoUsd: count })),
  }),
  /** A snapshot of one bucket's totals. */
  z.strictObject({ type: z.literal("bucket"), ...bucketFields }),
  /** A snapshot of the tokens waiting in a pool's attribution window. */
  z.strictObject({ type: z.literal("window"), pool: z.string(), tenant: z.string(), quant: z.string().nullable(), tokens: count }),
]);

export type JournalEntry = z.infer<typeof entrySchema>;
export type UsageEntry = Extract<JournalEntry, { type: "usage" }>;
export type AccrualEntry = Extract<JournalEntry, { type: "accrual" }>;

export type JournalLogger = Pick<Logger, "info" | "warn" | "error">;

/** Appended lines before a rewrite; after a larger snapshot the limit is twice its line count. */
const minimumLinesBeforeRewrite = 10_000;
const writeChunkCharacters = 1 << 20;
/** Wait after a failed write before the next attempt, so a full disk does not cost a rewrite per request. */
const retryDelayMilliseconds = 10_000;

export class Journal {
  readonly path: string;
  readonly #logger: JournalLogger;
  readonly #snapshot: () => Iterable<JournalEntry>;
  #linesSinceRewrite = 0;
  #snapshotLines = 0;
  /** True after a failed write, so that a later write rewrites the whole file from memory. */
  #stale = false;
  #retryAt = 0;

  /** `snapshot` returns the ledger's whole state as entries; rewrites write it in place of the file. */
  constructor(path: string, logger: JournalLogger, snapshot: () => Iterable<JournalEntry>) {
    this.path = path;
    this.#logger = logger;
    this.#snapshot = snapshot;
  }

  /** Reads the valid entries in file order. Lines that do not parse are skipped with a warning. */
  read(): JournalEntry[] {
    if (!existsSync(this.path)) return [];
    const lines = readFileSync(this.path, "utf8").split("\n");
    // A complete file ends with a newline, so the last element is empty unless a write was cut short.
    const partialLastLine = lines.pop();
    if (partialLastLine !== undefined && partialLastLine !== "") {
      this.#logger.warn(
        { path: this.path, line: lines.length + 1, characters: partialLastLine.length },
        "Skipped the ledger journal's incomplete last line, left by a write that did not finish; its change is lost",
      );
    }

    const entries: JournalEntry[] = [];
    const invalidLines: number[] = [];
    lines.forEach((line, index) => {
      const entry = parseLine(line);
      if (entry === undefined) invalidLines.push(index + 1);
      else entries.push(entry);
    });
    if (invalidLines.length > 0) {
      this.#logger.warn({ path: this.path, lines: invalidLines.slice(0, 20), count: invalidLines.length }, "Skipped invalid lines in the ledger journal");
    }
    return entries;
  }

  /** Appends one entry, or rewrites the file when it has grown or a previous write failed. */
  append(entry: JournalEntry): void {
    if (this.#stale) {
      if (Date.now() >= this.#retryAt) this.rewrite();
      return;
    }
    if (this.#linesSinceRewrite >= Math.max(minimumLinesBeforeRewrite, 2 * this.#snapshotLines)) {
      this.rewrite();
      return;
    }
    try {
      appendFileSync(this.path, `${JSON.stringify(entry)}\n`);
      this.#linesSinceRewrite += 1;
    } catch (error) {
      this.#markStale(error);
    }
  }

  /** Replaces the file with the current snapshot, creating its folder when missing: written to a temporary file, synced, then renamed over it. */
  rewrite(): void {
    const temporaryPath = `${this.path}.tmp`;
    try {
      mkdirSync(dirname(this.path), { recursive: true });
      const descriptor = openSync(temporaryPath, "w");
      try {
        this.#snapshotLines = writeEntries(descriptor, this.#snapshot());
        fsyncSync(descriptor);
      } finally {
        closeSync(descriptor);
      }
      renameSync(temporaryPath, this.path);
    } catch (error) {
      this.#markStale(error);
      return;
    }
    if (this.#stale) this.#logger.info({ path: this.path }, "Ledger journal written again after a failed write; no usage was lost");
    this.#stale = false;
    this.#linesSinceRewrite = 0;
  }

  #markStale(error: unknown): void {
    // Logs once per run of failures. Later writes retry with a full rewrite, at most every 10 seconds, until one succeeds.
    if (!this.#stale) {
      this.#logger.error({ err: error, path: this.path }, "Failed to write the ledger journal; usage is kept in memory and the whole file is written again on a later change, at most every 10 seconds");
    }
    this.#stale = true;
    this.#retryAt = Date.now() + retryDelayMilliseconds;
  }
}

function parseLine(line: string): JournalEntry | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  const parsed = entrySchema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

/** Writes the entries as lines in chunks of about 1 MiB and returns how many lines it wrote. */
function writeEntries(descriptor: number, entries: Iterable<JournalEntry>): number {
  let lines = 0;
  let chunk = "";
  for (const entry of entries) {
    chunk += `${JSON.stringify(entry)}\n`;
    lines += 1;
    if (chunk.length >= writeChunkCharacters) {
      writeSync(descriptor, chunk);
      chunk = "";
    }
  }
  if (chunk !== "") writeSync(descriptor, chunk);
  return lines;
}
