/** Raised for a bad command-line option; the dispatcher prints its message and exits with status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Parses a whole-number option within bounds, naming the option in the error. */
export function parseInteger(value: string | undefined, option: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`Invalid value for ${option}: '${value}'. Expected a whole number from ${min} to ${max}.`);
  }
  return parsed;
}
