import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";

import { pino, type Logger } from "pino";

import { configSchema, type SpillwayConfig } from "../controller/config/schema.ts";
import { ReplicaTable, type Replica, type ReplicaState } from "../controller/gateway/replicas.ts";
import { defaultRestartBackoff, LocalRuntime, restartDelayMs, type LocalRuntimeOptions } from "../controller/runtime/local.ts";
import { divideThreads } from "../controller/runtime/threads.ts";
import { makeTinyModel } from "./support/models.ts";

type LogEntry = Record<string, unknown>;

let model: string;

before(async () => {
  model = await makeTinyModel("runtime.gguf");
});

/** Creates a logger that keeps its JSON lines in `entries`. */
function captureLogger(): { logger: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => entries.push(JSON.parse(line) as LogEntry) });
  return { logger, entries };
}

function poolConfig(pool: Record<string, unknown>): SpillwayConfig {
  return configSchema.parse({
    pools: [{ name: "tiny", variants: [{ quant: "Q8_0", model }], slotsPerReplica: 1, contextSize: 512, threadsPerReplica: 1, ...pool }],
  });
}

function startRuntime(config: SpillwayConfig, options: Partial<LocalRuntimeOptions> = {}) {
  const table = new ReplicaTable();
  const { logger, entries } = captureLogger();
  const runtime = new LocalRuntime({ config, table, logger, gpu: false, drainSeconds: 2, ...options });
  return { runtime, table, entries };
}

/** Waits until the replica is in `state` in the table, checking the current entry first. */
function waitForState(table: ReplicaTable, id: string, state: ReplicaState, timeoutMs = 20_000): Promise<Replica> {
  const current = table.get(id);
  if (current?.state === state) return Promise.resolve(current);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      table.off("change", onChange);
      reject(new Error(`${id} did not become ${state} within ${timeoutMs} ms; it is ${table.get(id)?.state ?? "absent"}`));
    }, timeoutMs);
    const onChange = (replica: Replica) => {
      if (replica.id !== id || replica.state !== state) return;
      clearTimeout(timer);
      table.off("change", onChange);
      resolve(replica);
    };
    table.on("change", onChange);
  });
}

async function waitForLog(entries: LogEntry[], predicate: (entry: LogEntry) => boolean, timeoutMs = 20_000): Promise<LogEntry> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const found = entries.find(predicate);
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.fail("the expected log line never came");
}

/** Tells whether a process runs. A zombie waiting to be reaped counts as ended. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = readFileSync(`/proc/${pid}/stat`, { encoding: "utf8", flag: "r" });
  return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
}

async function waitForExit(pid: number, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

function pidOf(runtime: LocalRuntime, id: string): number {
  const pid = runtime.replicas().find((replica) => replica.id === id)?.pid;
  assert.ok(pid !== undefined, `${id} has a running process`);
  return pid;
}

describe("LocalRuntime", () => {
  test("start readies min replicas", async () => {
    const { runtime, table } = startRuntime(poolConfig({ replicas: { min: 2, max: 2 } }));
    try {
      await runtime.start();
      assert.deepEqual(table.all().map((replica) => replica.state), ["starting", "starting"]);

      const replicas = await Promise.all([waitForState(table, "tiny-0", "ready"), waitForState(table, "tiny-1", "ready")]);
      for (const replica of replicas) {
        assert.equal(replica.pool, "tiny");
        assert.equal(replica.quant, "Q8_0");
        assert.equal(replica.rung, 0);
        assert.equal(replica.slots, 1);
        assert.match(replica.url, /^http:\/\/127\.0\.0\.1:\d+$/);
        assert.equal((await fetch(`${replica.url}/readyz`)).status, 200);
      }
      const view = runtime.replicas();
      assert.deepEqual(view.map((replica) => replica.id), ["tiny-0", "tiny-1"]);
      assert.ok(view.every((replica) => replica.restarts === 0));
    } finally {
      await runtime.stop();
    }
  });

  test("stop ends workers and empties table", async () => {
    const { runtime, table, entries } = startRuntime(poolConfig({}));
    await runtime.start();
    await waitForState(table, "tiny-0", "ready");
    const pid = pidOf(runtime, "tiny-0");
    const states: ReplicaState[] = [];
    table.on("change", (replica) => states.push(replica.state));

    await runtime.stop();

    assert.equal(isAlive(pid), false);
    assert.deepEqual(states, ["draining"]);
    assert.deepEqual(table.all(), []);
    assert.deepEqual(runtime.replicas(), []);
    assert.ok(entries.some((entry) => entry.msg === "worker stopped" && entry.replica === "tiny-0"), "the worker drained and logged its stop");
    runtime.requestReplica("tiny");
    assert.deepEqual(table.all(), [], "no replica starts after stop");
  });

  test("killed replica restarts with new pid", async () => {
    const { runtime, table, entries } = startRuntime(poolConfig({}), { restartBackoff: { resetAfterMs: 1000 } });
    const restartWarnings = () => entries.filter((entry) => entry.msg === "replica exited unexpectedly; restarting it");
    try {
      await runtime.start();
      await waitForState(table, "tiny-0", "ready");
      const firstPid = pidOf(runtime, "tiny-0");

      const failed = waitForState(table, "tiny-0", "failed");
      process.kill(firstPid, "SIGKILL");
      await failed;
      const warning = restartWarnings()[0];
      assert.equal(warning?.level, 40);
      assert.equal(warning?.signal, "SIGKILL");
      assert.equal(warning?.replica, "tiny-0");
      assert.equal(warning?.pool, "tiny");
      assert.equal(warning?.restartInSeconds, 1);

      const ready = await waitForState(table, "tiny-0", "ready");
      const secondPid = pidOf(runtime, "tiny-0");
      assert.notEqual(secondPid, firstPid);
      assert.equal(runtime.replicas()[0]?.restarts, 1);
      assert.equal((await fetch(`${ready.url}/readyz`)).status, 200);

      // Ready for longer than resetAfterMs, so the next restart waits the first delay again.
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const failedAgain = waitForState(table, "tiny-0", "failed");
      process.kill(secondPid, "SIGKILL");
      await failedAgain;
      assert.equal(restartWarnings()[1]?.restartInSeconds, 1);
    } finally {
      await runtime.stop();
    }
  });

  test("requestReplica starts min-0 pool", async () => {
    const { runtime, table } = startRuntime(poolConfig({ replicas: { min: 0, max: 1 } }));
    try {
      await runtime.start();
      assert.deepEqual(table.all(), []);

      runtime.requestReplica("tiny");
      assert.equal(table.get("tiny-0")?.state, "starting");
      runtime.requestReplica("tiny");
      assert.equal(table.all().length, 1, "a second request while one starts adds none");

      await waitForState(table, "tiny-0", "ready");
      runtime.requestReplica("tiny");
      assert.equal(table.all().length, 1, "replicas.max is 1");
      assert.throws(() => runtime.requestReplica("nope"), /Unknown pool 'nope'/);
    } finally {
      await runtime.stop();
    }
  });

  test("setReplicaCount scales within bounds", async () => {
    const { runtime, table } = startRuntime(poolConfig({ replicas: { min: 1, max: 2 } }));
    try {
      await runtime.start();
      await waitForState(table, "tiny-0", "ready");
      runtime.setReplicaCount("tiny", 5);
      assert.equal(table.forPool("tiny").length, 2, "the count is capped at replicas.max");
      await waitForState(table, "tiny-1", "ready");

      const newest = pidOf(runtime, "tiny-1");
      runtime.setReplicaCount("tiny", 0);
      assert.ok(await waitForExit(newest), "the newest replica stopped");
      const remaining = table.forPool("tiny");
      assert.equal(remaining.length, 1, "the count stays at replicas.min");
      assert.equal(remaining[0]?.id, "tiny-0");
      assert.equal(remaining[0]?.state, "ready");
      assert.ok(runtime.coldStartSeconds("tiny") !== undefined, "the cold start time was measured");
    } finally {
      await runtime.stop();
    }
  });

  test("workers get divided threads", async () => {
    const config = poolConfig({ threadsPerReplica: undefined, replicas: { min: 1, max: 2 } });
    const { runtime, table, entries } = startRuntime(config, { cpuCount: 4 });
    try {
      assert.equal(runtime.threadsFor("tiny"), 2);
      await runtime.start();
      await waitForState(table, "tiny-0", "ready");
      const loaded = entries.find((entry) => entry.msg === "model loaded");
      assert.equal(loaded?.threads, 2);
      assert.equal(loaded?.replica, "tiny-0", "forwarded worker lines carry the replica");
      assert.equal(loaded?.pool, "tiny");
    } finally {
      await runtime.stop();
    }
  });

  test("controller exit kills workers", async () => {
    // A controller that exits without calling stop(), as after an uncaught exception.
    const script = `
      const [runtimeModule, tableModule, schemaModule, model] = process.argv.slice(1);
      const { LocalRuntime } = await import(runtimeModule);
      const { ReplicaTable } = await import(tableModule);
      const { configSchema } = await import(schemaModule);
      const { pino } = await import("pino");
      const config = configSchema.parse({ pools: [{ name: "tiny", variants: [{ quant: "Q8_0", model }], contextSize: 512, threadsPerReplica: 1 }] });
      const table = new ReplicaTable();
      const runtime = new LocalRuntime({ config, table, logger: pino({ level: "silent" }), gpu: false });
      table.on("change", (replica) => {
        if (replica.state !== "ready") return;
        process.stdout.write(String(runtime.replicas()[0].pid));
        process.exit(0);
      });
      await runtime.start();
    `;
    const modules = ["../controller/runtime/local.ts", "../controller/gateway/replicas.ts", "../controller/config/schema.ts"].map((module) => new URL(module, import.meta.url).href);
    const controller = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script, ...modules, model], { stdio: ["ignore", "pipe", "inherit"] });
    let output = "";
    controller.stdout.on("data", (data: Buffer) => {
      output += data.toString();
    });
    const [code] = (await once(controller, "exit")) as [number];
    assert.equal(code, 0);
    const pid = Number(output);
    assert.ok(Number.isInteger(pid), `the controller printed a worker pid, got '${output}'`);
    assert.ok(pid > 0);
    assert.equal(await waitForExit(pid), true, "the worker ended with the controller");
  });

  test("load failure logs the worker's reason", async () => {
    const config = poolConfig({ variants: [{ quant: "Q8_0", model: "/nonexistent/missing.gguf" }] });
    const { runtime, table, entries } = startRuntime(config, { restartBackoff: { firstDelayMs: 100 } });
    const failureWarnings = () => entries.filter((entry) => entry.msg === "replica exited before it was ready; restarting it");
    try {
      await runtime.start();
      await waitForState(table, "tiny-0", "failed");
      const warning = failureWarnings()[0];
      assert.equal(warning?.level, 40);
      assert.equal(warning?.code, 1);
      assert.match(String(warning?.reason), /model failed to load/);
      assert.match(String(warning?.reason), /\/nonexistent\/missing\.gguf/);
      const forwarded = entries.find((entry) => entry.msg === "model failed to load");
      assert.equal(forwarded?.level, 50, "the worker's error keeps its level");

      await waitForLog(entries, () => failureWarnings().length >= 2);
      assert.deepEqual(failureWarnings().slice(0, 2).map((entry) => entry.restartInSeconds), [0.1, 0.2]);
      assert.equal(runtime.replicas()[0]?.restarts, 1);
    } finally {
      await runtime.stop();
    }
  });
});

describe("restartDelayMs", () => {
  const cases: Array<[failures: number, delayMs: number]> = [
    [1, 1000],
    [2, 2000],
    [3, 4000],
    [5, 16_000],
    [6, 30_000],
    [20, 30_000],
  ];
  for (const [failures, delayMs] of cases) {
    test(`failure ${failures} waits ${delayMs} ms`, () => {
      assert.equal(restartDelayMs(failures, defaultRestartBackoff), delayMs);
    });
  }
});

describe("divideThreads", () => {
  const pool = (name: string, max: number, threadsPerReplica?: number) => ({
    name,
    variants: [{ quant: "Q8_0", model: "/m.gguf" }],
    replicas: { min: 0, max },
    threadsPerReplica,
  });
  const cases: Array<{ name: string; pools: unknown[]; cpus: number; expected: Record<string, number> }> = [
    { name: "one replica takes all", pools: [pool("a", 1)], cpus: 8, expected: { a: 8 } },
    { name: "split by replicas.max", pools: [pool("a", 2), pool("b", 2)], cpus: 8, expected: { a: 2, b: 2 } },
    { name: "rounded down", pools: [pool("a", 3)], cpus: 8, expected: { a: 2 } },
    { name: "at least one", pools: [pool("a", 4)], cpus: 2, expected: { a: 1 } },
    { name: "explicit wins", pools: [pool("a", 1, 3)], cpus: 2, expected: { a: 3 } },
    { name: "explicit reserves cpus", pools: [pool("a", 1, 4), pool("b", 2)], cpus: 8, expected: { a: 4, b: 2 } },
    { name: "reserved beyond cpus", pools: [pool("a", 2, 4), pool("b", 1)], cpus: 4, expected: { a: 4, b: 1 } },
  ];
  for (const { name, pools, cpus, expected } of cases) {
    test(name, () => {
      const threads = divideThreads(configSchema.parse({ pools }), cpus);
      assert.deepEqual(Object.fromEntries(threads), expected);
    });
  }
});
