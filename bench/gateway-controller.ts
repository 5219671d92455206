/**
 * The controller under test for `npm run bench:gateway`, in its own process: the real `startController`
 * with one pool whose only replica is the benchmark's upstream, added to the table by hand as ready.
 * The pool may not start workers of its own (`replicas.min` 0, and a pool with a replica never starts
 * one), and the replica's slots are plenty, so no request waits in the queue.
 */
import path from "node:path";
import { parseArgs } from "node:util";

import { pino } from "pino";

import { configSchema } from "../controller/config/schema.ts";
import { startController } from "../controller/controller.ts";
import { benchKeyVariable, benchPool, benchQuant, serveBenchmark, tellBenchmark } from "./gateway-protocol.ts";

const replicaSlots = 10_000;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: { upstream: { type: "string" }, "state-file": { type: "string" } },
  });
  const upstream = values.upstream;
  const statePath = values["state-file"];
  if (upstream === undefined || statePath === undefined) throw new Error("Usage: gateway-controller.ts --upstream <url> --state-file <file>");

  const config = configSchema.parse({
    gateway: { host: "127.0.0.1", port: 0 },
    auth: { keys: [{ name: "bench", keyEnv: benchKeyVariable }] },
    pools: [
      {
        name: benchPool,
        // Never loaded: the runtime would only read it when starting a worker, which this pool never does.
        variants: [{ quant: benchQuant, model: path.join(import.meta.dirname, "never-loaded.gguf") }],
        replicas: { min: 0, max: 1 },
      },
    ],
    overflow: { enabled: false },
  });
  // Like `spillway up`: JSON lines on stdout at info, which the benchmark sends to a file.
  const logger = pino({ name: "controller", level: "info" });
  const controller = await startController({ config, logger, statePath, drainSeconds: 2 });
  controller.table.upsert({ id: `${benchPool}-0`, pool: benchPool, url: upstream, quant: benchQuant, rung: 0, state: "ready", slots: replicaSlots });
  serveBenchmark({ stop: () => controller.stop() });
  tellBenchmark({ type: "ready", url: controller.url });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
