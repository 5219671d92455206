import express, { type NextFunction, type Request, type Response } from "express";
import type { Logger } from "pino";

import { ApiError, internalError } from "./errors.ts";
import { requestIdFrom } from "./request-id.ts";

/** Sets `res.locals.requestId` and the `x-request-id` response header for every request. */
export function assignRequestId(req: Request, res: Response, next: NextFunction): void {
  const requestId = requestIdFrom(req.headers["x-request-id"]);
  res.locals.requestId = requestId;
  res.setHeader("x-request-id", requestId);
  next();
}

/**
 * Parses a JSON body up to `maxBodyBytes`. Any content type is parsed as JSON, so clients that forget the
 * header still get a precise field error instead of "missing body".
 */
export function jsonBody(maxBodyBytes: number) {
  return express.json({ limit: maxBodyBytes, type: () => true, strict: false });
}

/** Answers routes that do not exist with an OpenAI-shaped 404. */
export function unknownUrl(req: Request, _res: Response, next: NextFunction): void {
  next(new ApiError(404, `Unknown request URL: ${req.method} ${req.path}.`, { code: "unknown_url" }));
}

interface BodyParserError {
  type: string;
  status?: number;
}

function isBodyParserError(error: unknown): error is BodyParserError {
  return typeof error === "object" && error !== null && typeof (error as BodyParserError).type === "string" && "status" in error;
}

/** Turns any error into an OpenAI error body. Unexpected errors are logged, and their response carries no internals. */
export function errorBoundary(logger: Logger, maxBodyBytes: number) {
  return (error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const requestId = res.locals.requestId as string;
    const apiError = toApiError(error, requestId, maxBodyBytes);
    if (apiError.status >= 500) logger.error({ requestId, err: error }, "request failed");
    else logger.debug({ requestId, status: apiError.status, param: apiError.param }, apiError.message);

    if (res.headersSent) {
      res.end();
      return;
    }
    res.status(apiError.status).set(apiError.headers).json(apiError.toBody());
  };
}

function toApiError(error: unknown, requestId: string, maxBodyBytes: number): ApiError {
  if (error instanceof ApiError) return error;
  if (isBodyParserError(error)) {
    if (error.type === "entity.parse.failed") {
      return new ApiError(400, "The request body is not valid JSON. Send a JSON object with 'model' and 'messages'.", {
        code: "invalid_json",
      });
    }
    if (error.type === "entity.too.large") {
      return new ApiError(413, `The request body is larger than the limit of ${maxBodyBytes} bytes. Shorten the messages.`, {
        code: "request_too_large",
      });
    }
    if (error.type === "encoding.unsupported" || error.type === "charset.unsupported") {
      return new ApiError(415, "The request body's encoding is not supported. Send UTF-8 JSON.", { code: "unsupported_encoding" });
    }
  }
  return internalError(requestId, error);
}
