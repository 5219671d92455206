import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { decideAdmission, predictedQueueSeconds, type AdmissionDecision, type AdmissionInput, type ReplicaLoad } from "../controller/gateway/admission.ts";

function replica(id: string, overrides: Partial<ReplicaLoad> = {}): ReplicaLoad {
  return { id, state: "ready", rung: 0, slots: 2, outstanding: 0, ...overrides };
}

const base: AdmissionInput = {
  replicas: [replica("a")],
  floorRung: 2,
  queueLength: 0,
  queueCapacity: 4,
  serviceSeconds: 1,
  sloSeconds: 1.5,
  promptTokens: 100,
  contextSize: 4096,
  overflowAvailable: true,
  budget: "ok",
  canStartReplica: false,
};

interface Case {
  name: string;
  input: Partial<AdmissionInput>;
  expected: Partial<AdmissionDecision> & { action: AdmissionDecision["action"] };
}

const cases: Case[] = [
  { name: "free replica serves locally", input: {}, expected: { action: "local", replicaId: "a" } },
  {
    name: "least loaded replica wins",
    input: { replicas: [replica("a", { outstanding: 1 }), replica("b")] },
    expected: { action: "local", replicaId: "b" },
  },
  {
    name: "equal load prefers higher quality",
    input: { replicas: [replica("a", { rung: 1 }), replica("b", { rung: 0 })] },
    expected: { action: "local", replicaId: "b" },
  },
  {
    name: "replica below the floor is skipped",
    input: { replicas: [replica("low", { rung: 2 }), replica("high", { rung: 0, outstanding: 1 })], floorRung: 1 },
    expected: { action: "local", replicaId: "high" },
  },
  {
    name: "only low rungs ready overflows for quality",
    input: { replicas: [replica("low", { rung: 2 })], floorRung: 1 },
    expected: { action: "overflow", reason: "quality_floor" },
  },
  {
    name: "quality floor without overflow queues for a coming replica",
    input: { replicas: [replica("low", { rung: 2 }), replica("new", { state: "starting", rung: 0 })], floorRung: 1, overflowAvailable: false },
    expected: { action: "queue" },
  },
  {
    name: "quality floor without overflow or hope is 429",
    input: { replicas: [replica("low", { rung: 2 })], floorRung: 1, overflowAvailable: false },
    expected: { action: "reject", status: 429 },
  },
  {
    name: "no ready replica overflows as cold start",
    input: { replicas: [replica("a", { state: "starting" })] },
    expected: { action: "overflow", reason: "cold_start" },
  },
  {
    name: "no replica at all starts one and overflows",
    input: { replicas: [], canStartReplica: true },
    expected: { action: "overflow", reason: "cold_start", startReplica: true },
  },
  {
    name: "cold start without overflow queues",
    input: { replicas: [], canStartReplica: true, overflowAvailable: false },
    expected: { action: "queue", startReplica: true },
  },
  {
    name: "busy slots with a short wait queue",
    input: { replicas: [replica("a", { outstanding: 2 })], serviceSeconds: 1, sloSeconds: 1.5 },
    expected: { action: "queue" },
  },
  {
    name: "predicted wait over the SLO overflows",
    input: { replicas: [replica("a", { outstanding: 2 })], queueLength: 3, serviceSeconds: 1, sloSeconds: 1.5 },
    expected: { action: "overflow", reason: "saturated" },
  },
  {
    name: "saturated without overflow still queues",
    input: { replicas: [replica("a", { outstanding: 2 })], queueLength: 3, overflowAvailable: false },
    expected: { action: "queue" },
  },
  {
    name: "full queue without overflow is 429 with Retry-After",
    input: { replicas: [replica("a", { outstanding: 2 })], queueLength: 4, overflowAvailable: false },
    expected: { action: "reject", status: 429, code: "rate_limit_exceeded" },
  },
  {
    name: "local-only budget never overflows",
    input: { replicas: [replica("a", { outstanding: 2 })], queueLength: 4, budget: "local_only" },
    expected: { action: "reject", status: 429 },
  },
  {
    name: "local-only budget still serves locally",
    input: { budget: "local_only" },
    expected: { action: "local", replicaId: "a" },
  },
  {
    name: "rejected budget is 429 even when idle",
    input: { budget: "rejected" },
    expected: { action: "reject", status: 429, code: "budget_exceeded" },
  },
  {
    name: "prompt over the context overflows",
    input: { promptTokens: 5000 },
    expected: { action: "overflow", reason: "context_length" },
  },
  {
    name: "prompt over the context without overflow is 400",
    input: { promptTokens: 5000, overflowAvailable: false },
    expected: { action: "reject", status: 400, code: "context_length_exceeded" },
  },
  {
    name: "waiting requests keep their turn",
    input: { queueLength: 1 },
    expected: { action: "queue" },
  },
  {
    name: "draining replica is not used",
    input: { replicas: [replica("a", { state: "draining" })], overflowAvailable: false, canStartReplica: false },
    expected: { action: "reject", status: 429 },
  },
];

describe("admission", () => {
  for (const { name, input, expected } of cases) {
    test(name, () => {
      const decision = decideAdmission({ ...base, ...input });
      for (const [key, value] of Object.entries(expected)) {
        assert.deepEqual((decision as Record<string, unknown>)[key], value, `${key} of ${JSON.stringify(decision)}`);
      }
      if (decision.action === "reject" && decision.status === 429) {
        assert.ok((decision.retryAfterSeconds ?? 0) >= 1, "a 429 carries Retry-After");
      }
    });
  }

  test("queue wait grows with the queue", () => {
    const busy = [replica("a", { outstanding: 2 }), replica("b", { outstanding: 2 })];
    assert.equal(predictedQueueSeconds({ queueLength: 0, serviceSeconds: 2 }, busy), 2);
    assert.equal(predictedQueueSeconds({ queueLength: 4, serviceSeconds: 2 }, busy), 4);
    assert.equal(predictedQueueSeconds({ queueLength: 0, serviceSeconds: 2 }, [replica("a", { outstanding: 1 })]), 0);
  });
});
