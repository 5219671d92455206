import { fork, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import path from "node:path";

import type { ChildMessage, LoadJob, LoadResult, ParentMessage } from "./gateway-protocol.ts";

export interface BenchChildOptions {
  /** A script next to this file, run through tsx. */
  script: string;
  args?: string[];
  /** Node options before the script, such as `--cpu-prof`. */
  nodeOptions?: string[];
  env?: NodeJS.ProcessEnv;
  /** File descriptor that receives the child's stdout, which is dropped when unset. */
  stdout?: number;
}

const startTimeoutMilliseconds = 30_000;
const stopTimeoutMilliseconds = 10_000;

type Waiter = { resolve: (message: ChildMessage) => void; reject: (error: Error) => void };

/** One child process of the benchmark and its IPC channel, with one request of each kind in flight at a time. */
export class BenchChild {
  readonly name: string;
  readonly url: string | undefined;
  readonly #process: ChildProcess;
  readonly #waiters: Map<ChildMessage["type"], Waiter>;
  readonly #exited: Promise<void>;

  private constructor(name: string, child: ChildProcess, url: string | undefined, waiters: Map<ChildMessage["type"], Waiter>, exited: Promise<void>) {
    this.name = name;
    this.#process = child;
    this.url = url;
    this.#waiters = waiters;
    this.#exited = exited;
  }

  /** Starts a child and resolves once it reports ready. */
  static async start(name: string, options: BenchChildOptions): Promise<BenchChild> {
    const child = fork(path.join(import.meta.dirname, options.script), options.args ?? [], {
      execArgv: [...(options.nodeOptions ?? []), "--import", import.meta.resolve("tsx")],
      env: options.env ?? process.env,
      stdio: ["ignore", options.stdout ?? "ignore", "inherit", "ipc"],
    });
    const waiters = new Map<ChildMessage["type"], Waiter>();
    child.on("message", (message: ChildMessage) => {
      if (message.type === "failed") {
        rejectAll(waiters, new Error(`${name} failed: ${message.message}`));
        return;
      }
      const waiter = waiters.get(message.type);
      waiters.delete(message.type);
      waiter?.resolve(message);
    });
    const exited = once(child, "exit").then(([code, signal]) => {
      rejectAll(waiters, new Error(`${name} exited (code ${String(code)}, signal ${String(signal)})`));
    });
    const ready = await expect(waiters, "ready", startTimeoutMilliseconds).catch(async (error: unknown) => {
      child.kill("SIGKILL");
      await exited;
      throw error;
    });
    return new BenchChild(name, child, ready.type === "ready" ? ready.url : undefined, waiters, exited);
  }

  /** Total CPU time the child has used so far. */
  async cpuUsage(): Promise<NodeJS.CpuUsage> {
    const reply = await this.#ask({ type: "cpu" }, "cpu");
    if (reply.type !== "cpu") throw new Error(`${this.name} returned a '${reply.type}' message instead of a CPU reading`);
    return reply.usage;
  }

  /** Runs a load job. Only the load generator child runs them. */
  async run(job: LoadJob, timeoutMilliseconds: number): Promise<LoadResult> {
    const reply = await this.#ask({ type: "run", job }, "result", timeoutMilliseconds);
    if (reply.type !== "result") throw new Error(`${this.name} returned a '${reply.type}' message instead of a load result`);
    return reply.result;
  }

  /** Asks the child to stop, waits for it to exit and kills it when it takes too long. */
  async stop(): Promise<void> {
    if (this.#process.exitCode !== null || this.#process.signalCode !== null) return;
    if (this.#process.connected) this.#send({ type: "stop" });
    const timer = setTimeout(() => this.#process.kill("SIGKILL"), stopTimeoutMilliseconds);
    await this.#exited;
    clearTimeout(timer);
  }

  #ask(message: ParentMessage, replyType: ChildMessage["type"], timeoutMilliseconds = startTimeoutMilliseconds): Promise<ChildMessage> {
    const reply = expect(this.#waiters, replyType, timeoutMilliseconds);
    this.#send(message);
    return reply;
  }

  #send(message: ParentMessage): void {
    this.#process.send(message);
  }
}

function expect(waiters: Map<ChildMessage["type"], Waiter>, type: ChildMessage["type"], timeoutMilliseconds: number): Promise<ChildMessage> {
  if (waiters.has(type)) return Promise.reject(new Error(`already waiting for a '${type}' message`));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiters.delete(type);
      reject(new Error(`timed out after ${timeoutMilliseconds} ms waiting for a '${type}' message`));
    }, timeoutMilliseconds);
    const settle = <T>(action: (value: T) => void) => (value: T) => {
      clearTimeout(timer);
      action(value);
    };
    waiters.set(type, { resolve: settle(resolve), reject: settle(reject) });
  });
}

function rejectAll(waiters: Map<ChildMessage["type"], Waiter>, error: Error): void {
  for (const waiter of waiters.values()) waiter.reject(error);
  waiters.clear();
}
