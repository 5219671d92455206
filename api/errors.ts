/**
 * OpenAI-shaped errors. Both the worker and the controller throw `ApiError` at the point where a request
 * fails, and one error boundary per server turns it into `{error: {message, type, param, code}}`.
 */

export type ApiErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error";

export interface ApiErrorBody {
  error: {
    message: string;
    type: ApiErrorType;
    param: string | null;
    code: string | null;
  };
}

export interface ApiErrorOptions {
  type?: ApiErrorType;
  param?: string | null;
  code?: string | null;
  headers?: Record<string, string>;
  cause?: unknown;
}

export class ApiError extends Error {
  override name = "ApiError";
  readonly status: number;
  readonly type: ApiErrorType;
  readonly param: string | null;
  readonly code: string | null;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: ApiErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.status = status;
    this.type = options.type ?? defaultTypeForStatus(status);
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }

  toBody(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

function defaultTypeForStatus(status: number): ApiErrorType {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 404) return "not_found_error";
  if (status === 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

export function invalidRequest(message: string, param: string | null, code: string | null = null): ApiError {
  return new ApiError(400, message, { param, code });
}

export function modelNotFound(model: string, available: readonly string[]): ApiError {
  const list = available.length > 0 ? available.join(", ") : "none";
  return new ApiError(404, `The model '${model}' does not exist. Available models: ${list}.`, {
    param: "model",
    code: "model_not_found",
  });
}

/** Creates the error for failures the client cannot act on; internals stay in the server log. */
export function internalError(requestId: string, cause?: unknown): ApiError {
  return new ApiError(
    500,
    `The server failed to process the request. Retry it, and report request id ${requestId} if the failure persists.`,
    { type: "server_error", cause },
  );
}
