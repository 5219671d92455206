/**
 * The load generator of `npm run bench:gateway`, in its own process. It is open-loop: request i leaves at
 * start + i / rate whether or not earlier replies have come back. Each request takes a free keep-alive
 * connection or opens a new one, so a slow server meets the same arrival rate as a fast one.
 */
import { Agent, request as httpRequest } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

import { serveBenchmark, tellBenchmark, type LoadJob, type LoadResult } from "./gateway-protocol.ts";

/** The outcome of one request. */
type Outcome =
  | { kind: "ok"; latency: number; firstChunkLatency: number; sendDelay: number }
  | { kind: "error" | "timeout"; description: string; sendDelay: number };

const maximumErrorSamples = 5;

// One agent for the whole process, so a measured run reuses the connections its warm-up opened.
const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY, maxFreeSockets: 1024 });

class TimeoutError extends Error {}

function sendOne(job: LoadJob, due: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const sentAt = performance.now();
    const sendDelay = sentAt - due;
    const fail = (error: Error) => {
      const kind = error instanceof TimeoutError ? "timeout" : "error";
      resolve({ kind, description: error.message, sendDelay });
    };
    const request = httpRequest(job.url, { method: "POST", agent, headers: job.headers }, (response) => {
      let firstChunkAt: number | undefined;
      const parts: Buffer[] = [];
      response.on("data", (part: Buffer) => {
        firstChunkAt ??= performance.now();
        parts.push(part);
      });
      response.on("error", fail);
      response.on("end", () => {
        const endedAt = performance.now();
        const body = Buffer.concat(parts).toString("utf8");
        const problem = replyProblem(job, response.statusCode ?? 0, body);
        if (problem !== undefined) {
          resolve({ kind: "error", description: problem, sendDelay });
          return;
        }
        resolve({ kind: "ok", latency: endedAt - sentAt, firstChunkLatency: (firstChunkAt ?? endedAt) - sentAt, sendDelay });
      });
    });
    request.setTimeout(job.timeoutMilliseconds, () => request.destroy(new TimeoutError(`no reply within ${job.timeoutMilliseconds} ms`)));
    request.on("error", fail);
    request.end(job.body);
  });
}

/** Returns why a reply does not count as a success, or undefined when it does. */
function replyProblem(job: LoadJob, status: number, body: string): string | undefined {
  if (status !== 200) return `HTTP ${status}: ${body.slice(0, 300)}`;
  if (!body.includes('"usage":{')) return "the reply carries no usage";
  if (job.stream && !body.endsWith("data: [DONE]\n\n")) return "the stream ended before [DONE]";
  return undefined;
}

async function runJob(job: LoadJob): Promise<LoadResult> {
  const scheduled = Math.max(1, Math.round(job.rate * job.seconds));
  const interval = 1000 / job.rate;
  const started = performance.now();
  const pending: Promise<Outcome>[] = [];
  for (let index = 0; index < scheduled; index += 1) {
    const due = started + index * interval;
    const wait = due - performance.now();
    // Timers fire in whole milliseconds, so requests that fall due in between leave together on the next one.
    if (wait >= 1) await sleep(wait);
    pending.push(sendOne(job, due));
  }
  const outcomes = await Promise.all(pending);
  return summarizeOutcomes(outcomes, (performance.now() - started) / 1000);
}

function summarizeOutcomes(outcomes: readonly Outcome[], elapsedSeconds: number): LoadResult {
  const result: LoadResult = {
    scheduled: outcomes.length,
    succeeded: 0,
    errors: 0,
    timeouts: 0,
    errorSamples: [],
    latencies: [],
    firstChunkLatencies: [],
    sendDelays: [],
    elapsedSeconds,
  };
  for (const outcome of outcomes) {
    result.sendDelays.push(outcome.sendDelay);
    if (outcome.kind === "ok") {
      result.succeeded += 1;
      result.latencies.push(outcome.latency);
      result.firstChunkLatencies.push(outcome.firstChunkLatency);
      continue;
    }
    if (outcome.kind === "timeout") result.timeouts += 1;
    else result.errors += 1;
    if (result.errorSamples.length < maximumErrorSamples) result.errorSamples.push(outcome.description);
  }
  return result;
}

serveBenchmark({
  run: runJob,
  stop: () => {
    agent.destroy();
    return Promise.resolve();
  },
});
tellBenchmark({ type: "ready" });
