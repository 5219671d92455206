import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";

import type { Logger } from "pino";

import { errorReason, forwardWorkerLog, parseWorkerLogLine } from "./worker-logs.ts";

/** Exit status of a worker process. */
export interface WorkerExit {
  /** Exit code, or null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The worker's last error log line, else its last stderr line: the likely cause of an unexpected exit. */
  reason: string | undefined;
}

/**
 * One `spillway worker` child process. Reads its log lines, forwards them to `logger` and turns the
 * lifecycle lines into events: `listening` with the worker's URL, then `ready`, and `exit` once the
 * process has ended and its output is read to the end.
 */
export class WorkerProcess extends EventEmitter<{ listening: [string]; ready: []; exit: [WorkerExit] }> {
  /** Undefined when the command could not be started. */
  readonly pid: number | undefined;
  /** Resolves with the same value as the `exit` event. */
  readonly exited: Promise<WorkerExit>;
  readonly #child: ChildProcess;
  #running = true;
  #lastError: string | undefined;
  #lastStderr: string | undefined;

  constructor(command: readonly string[], env: NodeJS.ProcessEnv, logger: Logger) {
    super();
    const [executable, ...args] = command;
    if (executable === undefined) throw new Error("The worker command is empty: pass at least the executable.");
    // The stdin pipe is never written: it closes when the controller dies, even by SIGKILL, and the
    // worker started with --exit-with-parent then drains and exits instead of living on as an orphan.
    this.#child = spawn(executable, args, { env, stdio: ["pipe", "pipe", "pipe"] });
    this.pid = this.#child.pid;

    this.#readLines(this.#child.stdout, (line) => this.#onStdout(line, logger));
    this.#readLines(this.#child.stderr, (line) => this.#onStderr(line, logger));
    this.#child.on("error", (error) => {
      this.#lastError = error.message;
    });
    this.exited = new Promise((resolve) => {
      // "close" rather than "exit", because it comes after the last output line, so the reason is known.
      this.#child.once("close", (code: number | null, signal: NodeJS.Signals | null) => {
        this.#running = false;
        const exit: WorkerExit = { code, signal, reason: this.#lastError ?? this.#lastStderr };
        this.emit("exit", exit);
        resolve(exit);
      });
    });
  }

  get running(): boolean {
    return this.#running;
  }

  /** Sends a signal, unless the process has already ended. */
  kill(signal: NodeJS.Signals): void {
    if (this.#running) this.#child.kill(signal);
  }

  #readLines(stream: Readable | null, onLine: (line: string) => void): void {
    if (stream === null) return;
    createInterface({ input: stream, crlfDelay: Infinity }).on("line", onLine);
  }

  #onStdout(line: string, logger: Logger): void {
    const entry = parseWorkerLogLine(line);
    forwardWorkerLog(logger, line, entry);
    if (entry === undefined) return;
    if (entry.level >= 50) this.#lastError = errorReason(entry);
    if (entry.msg === "worker listening" && typeof entry.fields.url === "string") this.emit("listening", entry.fields.url);
    if (entry.msg === "worker ready") this.emit("ready");
  }

  #onStderr(line: string, logger: Logger): void {
    const entry = parseWorkerLogLine(line);
    forwardWorkerLog(logger, line, entry);
    if (line.trim() !== "") this.#lastStderr = line.trim();
  }
}
