/** The counters of one usage bucket; money is in whole nano-USD. */
export interface BucketValues {
  requests: number;
  promptTokens: number;
  cachedPromptTokens: number;
  completionTokens: number;
  /** Gemini charges, or for local buckets the replica cost attributed to them. */
  spendNanoUsd: number;
  geminiEquivalentNanoUsd: number;
}

export const bucketFields = [
  "requests",
  "promptTokens",
  "cachedPromptTokens",
  "completionTokens",
  "spendNanoUsd",
  "geminiEquivalentNanoUsd",
] as const satisfies readonly (keyof BucketValues)[];

export const millisecondsPerMinute = 60_000;

export function emptyBucket(): BucketValues {
  return { requests: 0, promptTokens: 0, cachedPromptTokens: 0, completionTokens: 0, spendNanoUsd: 0, geminiEquivalentNanoUsd: 0 };
}

export function addBucket(target: BucketValues, delta: BucketValues): void {
  for (const field of bucketFields) target[field] += delta[field];
}

/** Returns the minute (minutes since the Unix epoch) that contains the instant. */
export function minuteOf(epochMilliseconds: number): number {
  return Math.floor(epochMilliseconds / millisecondsPerMinute);
}

/**
 * Per-minute buckets of one series, stored in typed arrays instead of one object per minute. A
 * minute costs 4 bytes of index and 8 bytes per field, so 35 days of minutes take about 2.6 MB.
 * Spare capacity after the arrays double can add as much again.
 * Minutes stay sorted, so range sums are a binary search and a scan. Float64 holds integers exactly
 * up to 2^53, which covers the nano-USD and token counters.
 */
export class MinuteSeries {
  #minutes = new Int32Array(16);
  #values = new Float64Array(16 * bucketFields.length);
  #length = 0;

  get size(): number {
    return this.#length;
  }

  /** Adds the delta to the bucket of the minute, creating it when missing. */
  add(minute: number, delta: BucketValues): void {
    const index = this.#lowerBound(minute);
    if (index === this.#length || this.#minutes[index] !== minute) {
      this.#insertAt(index, minute);
    }
    const offset = index * bucketFields.length;
    bucketFields.forEach((field, column) => {
      this.#values[offset + column] = (this.#values[offset + column] ?? 0) + delta[field];
    });
  }

  /** Adds the buckets of minutes in [fromMinute, toMinute) to `into`. */
  sumInto(fromMinute: number, toMinute: number, into: BucketValues): void {
    const end = this.#lowerBound(toMinute);
    for (let index = this.#lowerBound(fromMinute); index < end; index += 1) {
      const offset = index * bucketFields.length;
      bucketFields.forEach((field, column) => {
        into[field] += this.#values[offset + column] ?? 0;
      });
    }
  }

  /** Removes every bucket before the minute. */
  dropBefore(minute: number): void {
    const count = this.#lowerBound(minute);
    if (count === 0) return;
    this.#minutes.copyWithin(0, count, this.#length);
    this.#values.copyWithin(0, count * bucketFields.length, this.#length * bucketFields.length);
    this.#values.fill(0, (this.#length - count) * bucketFields.length, this.#length * bucketFields.length);
    this.#length -= count;
  }

  *entries(): IterableIterator<[number, BucketValues]> {
    for (let index = 0; index < this.#length; index += 1) {
      const bucket = emptyBucket();
      const offset = index * bucketFields.length;
      bucketFields.forEach((field, column) => {
        bucket[field] = this.#values[offset + column] ?? 0;
      });
      yield [this.#minutes[index] ?? 0, bucket];
    }
  }

  /** Returns the index of the first minute at or after `minute`. */
  #lowerBound(minute: number): number {
    // Usage arrives in time order, so the common case is the last bucket or a new one after it.
    const last = this.#minutes[this.#length - 1];
    if (this.#length === 0 || (last !== undefined && last < minute)) return this.#length;
    let low = 0;
    let high = this.#length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.#minutes[middle] ?? 0) < minute) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  #insertAt(index: number, minute: number): void {
    if (this.#length === this.#minutes.length) this.#grow();
    const width = bucketFields.length;
    this.#minutes.copyWithin(index + 1, index, this.#length);
    this.#values.copyWithin((index + 1) * width, index * width, this.#length * width);
    this.#minutes[index] = minute;
    this.#values.fill(0, index * width, (index + 1) * width);
    this.#length += 1;
  }

  #grow(): void {
    const minutes = new Int32Array(this.#minutes.length * 2);
    minutes.set(this.#minutes);
    const values = new Float64Array(minutes.length * bucketFields.length);
    values.set(this.#values);
    this.#minutes = minutes;
    this.#values = values;
  }
}
