/**
 * Whether every value set in `expected` holds the same value in `actual`. Arrays must have the same
 * length and match element by element; keys only `actual` has are ignored, and so are undefined values.
 */
export function isSubset(expected: unknown, actual: unknown): boolean {
  if (expected === undefined) return true;
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((item, index) => isSubset(item, actual[index]));
  }
  if (expected !== null && typeof expected === "object") {
    if (actual === null || typeof actual !== "object" || Array.isArray(actual)) return false;
    const record = actual as Record<string, unknown>;
    return Object.entries(expected).every(([key, value]) => isSubset(value, record[key]));
  }
  return expected === actual;
}
