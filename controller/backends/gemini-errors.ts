import { ApiError, type ApiErrorBody } from "../../api/errors.ts";
import { BackendError } from "./types.ts";

/**
 * Gemini's error bodies turned into OpenAI ones. Gemini returns errors as a JSON array,
 * `[{"error": {"code": 400, "message": "…", "status": "INVALID_ARGUMENT", "details": […]}}]`, where OpenAI
 * SDKs expect an `error` object, so a plain client loses the error's type, code and param.
 */

/** A `google.rpc.Status` as Gemini sends it, inside the array or, from some front ends, bare. */
interface GoogleStatus {
  code?: number;
  message?: string;
  status?: string;
  details?: unknown[];
}

const retryableStatuses = new Set([429, 500, 502, 503, 504]);

/** Google status names whose OpenAI code clients already handle; other names become lower-case codes. */
const openAiCodes: Record<string, string> = {
  RESOURCE_EXHAUSTED: "rate_limit_exceeded",
};

export interface UpstreamErrorOptions {
  /** Removed from every message, in case the upstream echoes it. */
  apiKey: string;
  /** The response's `Retry-After` header, used when the body has no RetryInfo detail. */
  retryAfterHeader?: string | null;
}

/** Reads the `google.rpc.Status` out of a Gemini error body, whatever its wrapping. */
export function parseGoogleStatus(text: string): GoogleStatus | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  const entry: unknown = Array.isArray(parsed) ? parsed[0] : parsed;
  if (typeof entry !== "object" || entry === null || !("error" in entry)) return undefined;
  const status = entry.error;
  return typeof status === "object" && status !== null ? status : undefined;
}

/** Converts an upstream HTTP error response into a `BackendError` with an OpenAI error body. */
export function upstreamError(httpStatus: number, text: string, options: UpstreamErrorOptions): BackendError {
  const status = parseGoogleStatus(text);
  const upstreamMessage = redact(status?.message ?? describeBody(text), options.apiKey);
  const retryAfterSeconds = retryDelaySeconds(status?.details) ?? parseRetryAfterHeader(options.retryAfterHeader);
  const googleStatus = status?.status;

  if (httpStatus === 401 || httpStatus === 403) {
    // The client's own credentials were fine: Spillway's Gemini key was rejected, which is a server fault.
    const message = `The overflow backend rejected Spillway's Gemini API key (HTTP ${httpStatus}): ${upstreamMessage}`;
    return new BackendError(502, errorBody(502, message, "upstream_authentication_failed"), { retryable: false });
  }

  const code = googleStatus === undefined ? null : (openAiCodes[googleStatus] ?? googleStatus.toLowerCase());
  const message = `Gemini returned HTTP ${httpStatus}${googleStatus === undefined ? "" : ` ${googleStatus}`}: ${upstreamMessage}`;
  return new BackendError(httpStatus, errorBody(httpStatus, message, code), {
    retryable: retryableStatuses.has(httpStatus),
    ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }),
  });
}

/**
 * Creates a failure that carries no Gemini error body: an unreachable host, a timeout, a cut or unreadable
 * stream. Whether it is retried also depends on whether the client has output already.
 */
export function upstreamFailure(
  status: number,
  code: string,
  message: string,
  options: { retryable: boolean; cause?: unknown },
): BackendError {
  return new BackendError(status, errorBody(status, message, code), options);
}

export function errorBody(status: number, message: string, code: string | null): ApiErrorBody {
  return new ApiError(status, message, { code }).toBody();
}

/** Reads the wait from a `google.rpc.RetryInfo` detail, whose `retryDelay` is a protobuf Duration such as "19s". */
export function retryDelaySeconds(details: unknown[] | undefined): number | undefined {
  for (const detail of details ?? []) {
    if (typeof detail !== "object" || detail === null) continue;
    const type = (detail as Record<string, unknown>)["@type"];
    const delay = (detail as Record<string, unknown>).retryDelay;
    if (typeof type !== "string" || !type.endsWith("google.rpc.RetryInfo") || typeof delay !== "string") continue;
    const match = /^(\d+(?:\.\d+)?)s$/.exec(delay);
    if (match?.[1] !== undefined) return Number(match[1]);
  }
  return undefined;
}

function parseRetryAfterHeader(header: string | null | undefined): number | undefined {
  if (header == null || !/^\d+$/.test(header.trim())) return undefined;
  return Number(header.trim());
}

function describeBody(text: string): string {
  const trimmed = text.trim();
  if (trimmed.length === 0) return "the response had no body";
  return `the response body was not a Google error: ${trimmed.slice(0, 200)}`;
}

/** Replaces every occurrence of the key, so no error that reaches a client or a log contains it. */
export function redact(text: string, apiKey: string): string {
  return apiKey.length === 0 ? text : text.split(apiKey).join("[redacted]");
}
