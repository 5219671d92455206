import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { formatStatus } from "../cli/commands/status.ts";
import { metricSample, startTestGateway, waitForReady, type TestGateway } from "./support/gateway.ts";
import { makeTinyModel } from "./support/models.ts";

let gateway: TestGateway;

before(async () => {
  // Three rungs of one tiny model; replies never end early, so each request decodes max_tokens.
  const shape = { layers: 4, embedding: 256, eosWeight: -100 };
  const f16 = await makeTinyModel("ladder-f16.gguf", { ...shape, quant: "f16" });
  const q8 = await makeTinyModel("ladder-q8.gguf", { ...shape, quant: "q8_0" });
  const q4 = await makeTinyModel("ladder-q4.gguf", { ...shape, quant: "q4_0" });
  gateway = await startTestGateway({
    pools: [
      {
        name: "ladder",
        variants: [{ quant: "F16", model: f16 }, { quant: "Q8_0", model: q8 }, { quant: "Q4_0", model: q4 }],
        replicas: { min: 1, max: 1 },
        slotsPerReplica: 2,
        queueSize: 32,
        slo: { timeToFirstTokenSeconds: 30 },
        // Short timers so the test sees both directions within seconds; speeds of tiny models barely
        // differ, so any rung counts as faster here (the rule itself is covered by the planner tests).
        autoscaling: {
          stepDownAfterSeconds: 0.5,
          stepUpAfterSeconds: 1.5,
          minDwellSeconds: 0.75,
          smoothingSeconds: 0.25,
          scaleUpAfterSeconds: 600,
          scaleDownAfterSeconds: 600,
          minStepSpeedup: 0,
        },
      },
    ],
    overflow: { enabled: false },
  }, {}, { controlIntervalSeconds: 0.25 });
  await waitForReady(gateway, "ladder");
});

after(async () => {
  await gateway.stop();
});

function rungOf(): number | undefined {
  return gateway.controller.table.forPool("ladder")[0]?.rung;
}

async function waitUntil(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const table = JSON.stringify(gateway.controller.table.forPool("ladder"));
  const status = JSON.stringify(gateway.controller.controlLoop?.status("ladder"));
  assert.fail(`timed out waiting for ${what}: replicas ${table}, control ${status}`);
}

describe("quantization ladder", () => {
  test("steps down under load and back up after", async () => {
    let running = true;
    const statuses: number[] = [];
    const quants = new Set<string>();
    const client = async () => {
      while (running) {
        const response = await fetch(`${gateway.url}/v1/chat/completions`, {
          method: "POST",
          body: JSON.stringify({ model: "ladder", messages: [{ role: "user", content: "hi" }], max_tokens: 24, stream: true }),
        });
        const body = await response.text();
        statuses.push(response.status === 200 && body.trimEnd().endsWith("data: [DONE]") ? 200 : response.status || 599);
        quants.add(response.headers.get("x-spillway-quant") ?? "");
      }
    };
    const clients = Array.from({ length: 8 }, () => client());

    await waitUntil(() => rungOf() === 2, "the replica to reach the lowest rung");
    running = false;
    await Promise.all(clients);
    await waitUntil(() => rungOf() === 0 && gateway.controller.table.forPool("ladder")[0]?.swapping !== true, "the replica to step back to the top rung");

    const failed = statuses.filter((status) => status !== 200);
    assert.ok(statuses.length > 0, "requests ran during the test");
    assert.equal(failed.length, 0, `failed requests: ${failed.join(", ")}`);
    assert.ok(quants.has("F16"), `served by ${[...quants].join(", ")}`);
    assert.ok(quants.has("Q4_0"), `served by ${[...quants].join(", ")}`);
    assert.ok((await metricSample(gateway, 'spillway_ladder_steps_total{pool="ladder",direction="down"}')) >= 2);
    assert.ok((await metricSample(gateway, 'spillway_ladder_steps_total{pool="ladder",direction="up"}')) >= 2);
  });

  test("status shows variants and pressure", async () => {
    const response = await fetch(`${gateway.url}/v1/spillway/status`);
    assert.equal(response.status, 200);
    const body = (await response.json()) as Parameters<typeof formatStatus>[0];
    const pool = body.pools.find((entry) => entry.name === "ladder");
    assert.deepEqual(pool?.ladder, ["F16", "Q8_0", "Q4_0"]);
    assert.equal(pool?.replicas[0]?.quant, "F16");
    assert.equal(typeof pool?.control?.pressure, "number");
    const text = formatStatus(body);
    assert.match(text, /pool ladder {2}ladder F16 > Q8_0 > Q4_0 {2}pressure \d+\.\d\d/);
    assert.match(text, /ladder-0 +ready +F16 +0\/2 +no/);
  });
});
