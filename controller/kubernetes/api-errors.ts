import { ApiException } from "@kubernetes/client-node";

/** The HTTP status of a failed API call, or undefined when the call did not reach the API server. */
export function statusCodeOf(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}

export function isNotFound(error: unknown): boolean {
  return statusCodeOf(error) === 404;
}

export function isConflict(error: unknown): boolean {
  return statusCodeOf(error) === 409;
}

/** Runs a read-modify-write step again while the API server answers 409 Conflict, as each attempt reads afresh. */
export async function retryOnConflict<Result>(step: () => Promise<Result>, attempts = 5): Promise<Result> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await step();
    } catch (error) {
      if (!isConflict(error) || attempt >= attempts) throw error;
    }
  }
}

/** Prefixes an error's message with what was being done, keeping the original as the cause. */
export function wrapError(context: string, error: unknown): Error {
  let message = String(error);
  if (error instanceof ApiException) message = apiExceptionMessage(error);
  else if (error instanceof Error) message = error.message;
  return new Error(`${context}: ${message}`, { cause: error });
}

function apiExceptionMessage(error: ApiException<unknown>): string {
  try {
    const status = JSON.parse(String(error.body)) as { message?: string };
    if (typeof status.message === "string") return `HTTP ${error.code}: ${status.message}`;
  } catch {
    // Not a Status object, so the HTTP code is the whole message.
  }
  return `HTTP ${error.code}`;
}
