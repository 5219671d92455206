import { request as httpRequest, type Agent, type ClientRequest, type IncomingMessage } from "node:http";

/** A POST whose response headers have arrived. The body is still to be read from `response`. */
export interface Exchange {
  request: ClientRequest;
  response: IncomingMessage;
}

export interface PostOptions {
  agent: Agent;
  headers: Record<string, string>;
  /** Maximum wait for the response headers, in milliseconds. Reading the body is not bounded by it. */
  headersTimeoutMs: number;
  /** Destroys the request and its socket whenever it aborts, also while the body is being read. */
  signal: AbortSignal;
}

/**
 * Posts a JSON body over plain HTTP with `node:http` and resolves once the response headers arrive.
 * Rejects when the request fails, the signal aborts or the headers time out, and destroys the request
 * in the last two cases. A caller that stops reading a response before its end must destroy `request`
 * too. A destroyed request closes its socket, which then never returns to the agent's keep-alive pool,
 * where a half-read response would corrupt the next call on that socket.
 */
export function postJson(url: string, body: string, options: PostOptions): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    if (options.signal.aborted) {
      reject(abortReason(options.signal));
      return;
    }
    let request: ClientRequest;
    try {
      request = httpRequest(url, {
        method: "POST",
        agent: options.agent,
        headers: { ...options.headers, "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) },
      });
    } catch (error) {
      // `http.request` throws before sending anything for an invalid URL or a protocol other than http:.
      reject(error instanceof Error ? error : new Error(String(error)));
      return;
    }

    const onAbort = () => request.destroy(abortReason(options.signal));
    options.signal.addEventListener("abort", onAbort, { once: true });
    // 'close' follows the end of the response or the destruction of the request, whichever comes first.
    request.once("close", () => options.signal.removeEventListener("abort", onAbort));

    const timeoutError = () => new Error(`no response headers within ${options.headersTimeoutMs / 1000} s`);
    const timer = setTimeout(() => request.destroy(timeoutError()), options.headersTimeoutMs);
    // This listener stays for the request's whole life, because an 'error' event without a listener would
    // crash the process. After the headers, a socket error also fails the response stream, where the reader sees it.
    request.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    request.once("response", (response) => {
      clearTimeout(timer);
      resolve({ request, response });
    });
    request.end(body);
  });
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error("the request was aborted", { cause: signal.reason });
}

/** Reads a response body to its end as UTF-8 text. Rejects when the connection closes before the end. */
export async function readText(response: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of response) parts.push(part as Buffer);
  return Buffer.concat(parts).toString("utf8");
}

/** Returns a response header's value, or null when the response does not have it. */
export function headerValue(response: IncomingMessage, name: string): string | null {
  const value = response.headers[name];
  if (value === undefined) return null;
  return Array.isArray(value) ? value.join(", ") : value;
}
