/** One finished request, as the client saw it. */
export interface RequestSample {
  /** Seconds from sending the request to the first decoded text. */
  timeToFirstTokenSeconds: number;
  /** Seconds from the first decoded text to the last. */
  decodeSeconds: number;
  completionTokens: number;
  promptTokens: number;
}

/**
 * Sends one request and resolves with what it measured. The id goes into the prompt, so requests with
 * different ids never share a cached prompt.
 */
export type SendRequest = (requestId: number | string) => Promise<RequestSample>;

/** Requests sent together, and the time from sending them to the last one finishing. */
export interface Batch {
  samples: RequestSample[];
  wallSeconds: number;
}

/** Sends `count` requests at once and waits for all of them, as `count` simultaneous clients would. */
export async function sendBatch(send: (index: number) => Promise<RequestSample>, count: number): Promise<Batch> {
  const started = performance.now();
  const samples = await Promise.all(Array.from({ length: count }, (_, index) => send(index)));
  return { samples, wallSeconds: (performance.now() - started) / 1000 };
}

/**
 * Measures several targets in turns. Each round sends one batch of `concurrency` requests to each target
 * in order and waits for it to finish. Only one target decodes at a time, so a change in machine load
 * hits every target alike. Every request id is new and of the same length, so no target reuses a prompt
 * that an earlier request left in its cache, and all prompts have the same token count.
 * Returns the batches of each target, in the order of `targets`.
 */
export async function runInTurns(label: string, targets: readonly SendRequest[], rounds: number, concurrency: number): Promise<Batch[][]> {
  const batches = targets.map((): Batch[] => []);
  for (let round = 0; round < rounds; round++) {
    for (const [position, send] of targets.entries()) {
      const requestId = (index: number) => `${label}-${position}-${String(round * concurrency + index).padStart(4, "0")}`;
      const batch = await sendBatch((index) => send(requestId(index)), concurrency);
      batches[position]?.push(batch);
    }
  }
  return batches;
}

/** Figures of one scenario: one row of the results table. */
export interface ScenarioSummary {
  requests: number;
  concurrency: number;
  /** Mean completion tokens per request. Every reply should decode exactly max_tokens. */
  completionTokens: number;
  promptTokens: number;
  /** Median over requests of (completion tokens - 1) / decode seconds. */
  decodeTokensPerSecond: number;
  /** Median over batches of the batch's completion tokens divided by its wall time. */
  aggregateTokensPerSecond: number;
  timeToFirstTokenP50Seconds: number;
  timeToFirstTokenP95Seconds: number;
}

/**
 * Summarizes a scenario. Rates are medians (over requests for decode speed, over batches for aggregate
 * throughput), so a burst of load from another process on a shared machine moves them less than a mean.
 */
export function summarize(batches: readonly Batch[], concurrency: number): ScenarioSummary {
  const samples = batches.flatMap((batch) => batch.samples);
  if (samples.length === 0) throw new Error("a scenario finished without any requests");
  const firstTokenTimes = samples.map((sample) => sample.timeToFirstTokenSeconds);
  // The first token ends the time to first token, so decode speed counts only the tokens after it.
  const decodeRates = samples
    .filter((sample) => sample.completionTokens > 1 && sample.decodeSeconds > 0)
    .map((sample) => (sample.completionTokens - 1) / sample.decodeSeconds);
  const batchRates = batches.map((batch) => sum(batch.samples.map((sample) => sample.completionTokens)) / batch.wallSeconds);
  return {
    requests: samples.length,
    concurrency,
    completionTokens: sum(samples.map((sample) => sample.completionTokens)) / samples.length,
    promptTokens: sum(samples.map((sample) => sample.promptTokens)) / samples.length,
    decodeTokensPerSecond: percentile(decodeRates, 50),
    aggregateTokensPerSecond: percentile(batchRates, 50),
    timeToFirstTokenP50Seconds: percentile(firstTokenTimes, 50),
    timeToFirstTokenP95Seconds: percentile(firstTokenTimes, 95),
  };
}

/** Linear interpolation between the closest ranks, as numpy's default `percentile` does. */
export function percentile(values: readonly number[], rank: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const position = ((sorted.length - 1) * rank) / 100;
  const lower = Math.floor(position);
  const upper = Math.ceil(position);
  const lowerValue = sorted[lower] ?? Number.NaN;
  const upperValue = sorted[upper] ?? Number.NaN;
  return lowerValue + (upperValue - lowerValue) * (position - lower);
}

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}
