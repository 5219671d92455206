import OpenAI from "openai";
import { pino } from "pino";

import { startWorker, type RunningWorker, type WorkerOptions } from "../../worker/run.ts";
import { makeTinyModel } from "./models.ts";

export interface TestWorker {
  worker: RunningWorker;
  url: string;
  /** The official SDK pointed at the worker, with retries off so every status reaches the test. */
  client: OpenAI;
  modelId: string;
}

/**
 * Starts a real worker on 127.0.0.1 (port 0) serving a tiny model, or the ladder in `overrides.variants`.
 * One thread per worker keeps the two-core test machines responsive; node-llama-cpp's own default is far
 * slower there.
 */
export async function startTestWorker(overrides: Partial<WorkerOptions> = {}, modelPath?: string): Promise<TestWorker> {
  const model = overrides.variants !== undefined ? undefined : (modelPath ?? (await makeTinyModel("worker.gguf")));
  const options: WorkerOptions = {
    model,
    host: "127.0.0.1",
    port: 0,
    name: "tiny",
    slots: 2,
    maxQueue: 2,
    threads: 1,
    contextSize: 1024,
    gpu: false,
    modelsDirectory: "/nonexistent",
    maxBodyBytes: 64 * 1024,
    drainSeconds: 5,
    ...overrides,
  };
  const logger = pino({ level: process.env.SPILLWAY_TEST_LOG_LEVEL ?? "silent" });
  const worker = await startWorker(options, logger);
  await worker.ready;
  const client = new OpenAI({ baseURL: `${worker.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
  return { worker, url: worker.url, client, modelId: options.name };
}

/** Posts a raw body, for requests the SDK would refuse to build. */
export async function postRaw(url: string, body: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
  });
}

/** Reads an SSE body into its `data:` payloads, `[DONE]` included as a string. */
export async function readEvents(response: Response): Promise<unknown[]> {
  const text = await response.text();
  return text
    .split("\n\n")
    .filter((block) => block.startsWith("data: "))
    .map((block) => {
      const data = block.slice("data: ".length);
      return data === "[DONE]" ? data : (JSON.parse(data) as unknown);
    });
}
