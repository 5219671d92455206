import type { ServerResponse } from "node:http";

import type { ApiErrorBody } from "./errors.ts";

/**
 * Writes a server-sent event stream in the form OpenAI clients parse: `data: <json>\n\n` per event and
 * `data: [DONE]\n\n` at the end. Writes after the client has gone are dropped.
 */
export class SseWriter {
  readonly #response: ServerResponse;
  #closed = false;

  constructor(response: ServerResponse) {
    this.#response = response;
  }

  /** Sends the status and headers at once, because clients wait for them before reading events. */
  open(extraHeaders: Record<string, string> = {}): void {
    this.#response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
      ...extraHeaders,
    });
    this.#response.flushHeaders();
  }

  get closed(): boolean {
    return this.#closed || this.#response.destroyed;
  }

  send(payload: unknown): void {
    if (this.closed) return;
    this.#response.write(`data: ${JSON.stringify(payload)}\n\n`);
  }

  /** Sends an error event, which OpenAI SDKs throw as an APIError, then closes the stream. */
  fail(body: ApiErrorBody): void {
    this.send(body);
    this.end();
  }

  finish(): void {
    if (this.closed) return;
    this.#response.write("data: [DONE]\n\n");
    this.end();
  }

  end(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#response.end();
  }
}
