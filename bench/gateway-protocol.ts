/**
 * Messages that `bench/gateway.ts` and its child processes (the upstream, the controller and the load
 * generator) send each other over the IPC channel that `fork` opens.
 */

/** The pool of the benchmark's controller. Requests name it as their model, direct or through the gateway. */
export const benchPool = "bench";
/** The environment variable that carries the one tenant's API key to the controller. */
export const benchKeyVariable = "SPILLWAY_BENCH_KEY";
export const benchApiKey = "spillway-bench-key";
export const benchQuant = "Q4_K_M";

/** One fixed-rate run of the load generator against one URL. */
export interface LoadJob {
  url: string;
  headers: Record<string, string>;
  body: string;
  stream: boolean;
  /** Requests per second, sent on a fixed schedule whatever the replies do. */
  rate: number;
  seconds: number;
  timeoutMilliseconds: number;
}

export interface LoadResult {
  /** Requests the schedule called for; every one of them was sent. */
  scheduled: number;
  /** Replies with status 200 and a complete body. */
  succeeded: number;
  /** Requests that failed: a status other than 200, an incomplete body or a socket error. */
  errors: number;
  timeouts: number;
  /** A few failure descriptions, to tell what went wrong without a debugger. */
  errorSamples: string[];
  /** Per successful request, milliseconds from sending it to the end of the reply. */
  latencies: number[];
  /** Per successful request, milliseconds from sending it to the first byte of the body. */
  firstChunkLatencies: number[];
  /** Per request, milliseconds between its scheduled and actual sending: the generator's own delay. */
  sendDelays: number[];
  /** Seconds from the first scheduled request to the end of the last reply. */
  elapsedSeconds: number;
}

export type ParentMessage = { type: "cpu" } | { type: "stop" } | { type: "run"; job: LoadJob };

export type ChildMessage =
  /** The child is serving; `url` is where, for a child that listens. */
  | { type: "ready"; url?: string }
  | { type: "cpu"; usage: NodeJS.CpuUsage }
  | { type: "result"; result: LoadResult }
  | { type: "failed"; message: string };

export interface ChildHandlers {
  /** Closes the child's servers and connections. The process exits once it resolves. */
  stop(): Promise<void>;
  run?(job: LoadJob): Promise<LoadResult>;
}

/** Sends a message to the benchmark, which must be this process's parent. */
export function tellBenchmark(message: ChildMessage): void {
  if (process.send === undefined) throw new Error("This script runs as a child of bench/gateway.ts. Start it with `npm run bench:gateway`.");
  process.send(message);
}

/**
 * Handles the benchmark's messages in a child process: CPU readings, load jobs and the request to stop.
 * The child also exits when the benchmark disconnects, so that none outlives a benchmark that crashed.
 */
export function serveBenchmark(handlers: ChildHandlers): void {
  let stopping = false;
  const stop = (exitCode: number) => {
    if (stopping) return;
    stopping = true;
    handlers
      .stop()
      .catch((error: unknown) => console.error(error))
      .finally(() => process.exit(exitCode));
  };
  process.on("message", (message: ParentMessage) => {
    if (message.type === "cpu") tellBenchmark({ type: "cpu", usage: process.cpuUsage() });
    else if (message.type === "stop") stop(0);
    else if (handlers.run === undefined) tellBenchmark({ type: "failed", message: "this child does not run load jobs" });
    else {
      handlers.run(message.job).then(
        (result) => tellBenchmark({ type: "result", result }),
        (error: unknown) => tellBenchmark({ type: "failed", message: describeError(error) }),
      );
    }
  });
  process.on("disconnect", () => stop(1));
}

export function describeError(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}
