import assert from "node:assert/strict";

/**
 * Polls `read` every 20 ms until it returns something other than undefined, and returns that. A read
 * that throws counts as not yet. Fails the test, naming `what`, after `timeoutMs`.
 */
export async function eventually<Result>(read: () => Promise<Result | undefined> | Result | undefined, what: string, timeoutMs = 5000): Promise<Result> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await Promise.resolve()
      .then(read)
      .catch(() => undefined);
    if (result !== undefined) return result;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
