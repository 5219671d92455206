import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";

import { pino, type Logger } from "pino";

import { loadPlannerStates, savePlannerStates } from "../controller/autoscaler/planner-state.ts";
import { initialPlannerState, planPool } from "../controller/autoscaler/planner.ts";
import { measureDemand } from "../controller/autoscaler/pressure.ts";
import type { PlanAction, PlannerState, PoolObservation, PoolPlan, ReplicaObservation } from "../controller/autoscaler/types.ts";
import { poolSchema, type AutoscalingConfig, type PoolConfig, type RequestClass } from "../controller/config/schema.ts";

const variants = [
  { quant: "Q4_K_M", model: "npc-q4.gguf" },
  { quant: "Q3_K_M", model: "npc-q3.gguf" },
  { quant: "Q2_K", model: "npc-q2.gguf" },
];

/** Short enough that each tick's demand takes effect at once, so rule timings read exactly. */
const instantSmoothing = 0.001;

interface PoolOverrides {
  replicas?: { min?: number; max?: number };
  autoscaling?: Partial<AutoscalingConfig>;
  qualityFloors?: Partial<Record<RequestClass, string>>;
}

/** Builds a pool with 4 slots per replica, 1 to 2 replicas and the default autoscaling settings, except smoothing. */
function makePool(overrides: PoolOverrides = {}): PoolConfig {
  return poolSchema.parse({
    name: "npc",
    variants,
    slotsPerReplica: 4,
    qualityFloors: overrides.qualityFloors ?? {},
    replicas: { min: 1, max: 2, ...overrides.replicas },
    autoscaling: { smoothingSeconds: instantSmoothing, ...overrides.autoscaling },
  });
}

interface Tick {
  /** Seconds since the start of the run. */
  at: number;
  /** Requests in the pool, in slots: ready replicas' slots fill first and the rest waits in the queue. */
  demand: number;
  demandWithoutReplica?: boolean;
}

/** Returns one tick every `interval` seconds from `from` to `to`, both included, with the same demand. */
function ticks(from: number, to: number, demand: number, interval = 1): Tick[] {
  const result: Tick[] = [];
  for (let at = from; at <= to; at += interval) result.push({ at, demand });
  return result;
}

interface SimulatedReplica {
  id: string;
  rung: number;
  state: ReplicaObservation["state"];
  swapping: boolean;
  /** Seconds at which a starting replica becomes ready. */
  readyAt: number;
}

interface SimulationOptions {
  decodeRates?: Array<number | undefined>;
  /** Seconds an added replica takes to become ready, also reported as the pool's cold start. */
  coldStartSeconds?: number;
}

/**
 * A pool whose replicas follow the plans at once: a step switches the replica before the next tick,
 * an added replica starts and becomes ready after the cold start, a removed one disappears.
 */
class Simulation {
  state: PlannerState = initialPlannerState();
  /** Every action so far, as `seconds scale count` or `seconds step id from→to`. */
  readonly actions: string[] = [];
  readonly notes: string[] = [];
  replicas: SimulatedReplica[];

  constructor(
    readonly pool: PoolConfig,
    /** Replicas at the start as `id:rung`, separated by spaces, all ready. */
    replicas: string,
    readonly options: SimulationOptions = {},
  ) {
    this.replicas = replicas
      .split(" ")
      .filter((entry) => entry !== "")
      .map((entry) => {
        const [id = "", rung = "0"] = entry.split(":");
        return { id, rung: Number(rung), state: "ready", swapping: false, readyAt: 0 };
      });
  }

  run(sequence: readonly Tick[]): this {
    for (const tick of sequence) this.tick(tick);
    return this;
  }

  tick(tick: Tick): PoolPlan {
    for (const replica of this.replicas) {
      if (replica.state === "starting" && replica.readyAt <= tick.at) replica.state = "ready";
    }
    const { plan, state } = planPool(this.pool, this.observe(tick), this.state);
    this.state = state;
    this.notes.push(...plan.notes);
    for (const action of plan.actions) {
      this.actions.push(`${tick.at} ${describeAction(action)}`);
      this.apply(tick.at, action);
    }
    return plan;
  }

  observe(tick: Tick): PoolObservation {
    let unserved = tick.demand;
    const replicas = [...this.replicas].sort((a, b) => a.id.localeCompare(b.id)).map((replica) => {
      const outstanding = replica.state === "ready" ? Math.min(unserved, this.pool.slotsPerReplica) : 0;
      unserved -= outstanding;
      return { id: replica.id, state: replica.state, rung: replica.rung, swapping: replica.swapping, slots: this.pool.slotsPerReplica, outstanding };
    });
    return {
      at: tick.at * 1000,
      replicas,
      queueDepth: unserved,
      saturatedOverflowRate: 0,
      serviceSeconds: 1,
      decodeRates: this.options.decodeRates ?? [],
      coldStartSeconds: this.options.coldStartSeconds,
      demandWithoutReplica: tick.demandWithoutReplica ?? false,
    };
  }

  apply(at: number, action: PlanAction): void {
    if (action.kind === "step") {
      const replica = this.replicas.find((candidate) => candidate.id === action.replicaId);
      assert.ok(replica, `the plan steps unknown replica ${action.replicaId}`);
      replica.rung = action.toRung;
      return;
    }
    this.replicas.sort((a, b) => a.id.localeCompare(b.id));
    while (this.replicas.length > action.replicas) this.replicas.pop();
    while (this.replicas.length < action.replicas) {
      const id = String.fromCharCode("a".charCodeAt(0) + this.replicas.length);
      this.replicas.push({ id, rung: 0, state: "starting", swapping: false, readyAt: at + (this.options.coldStartSeconds ?? 0) });
    }
  }
}

function describeAction(action: PlanAction): string {
  if (action.kind === "scale") return `scale ${action.replicas}`;
  return `step ${action.replicaId} ${action.fromRung}→${action.toRung}`;
}

interface Scenario {
  name: string;
  pool?: PoolOverrides;
  replicas: string;
  options?: SimulationOptions;
  ticks: Tick[];
  /** Every action of the run, in order. */
  expected: string[];
  /** Text that some note of the run contains. */
  note?: string;
}

// The default settings apply: pressure is high above 1 and low below 0.5. Scaling up waits 5 s and
// down 60 s, stepping down 10 s and up 60 s, and steps are 20 s apart. Demand 12 on two replicas is
// pressure 1.5.
const scenarios: Scenario[] = [
  {
    name: "steps down at max after delay",
    replicas: "a:0 b:0",
    ticks: ticks(0, 12, 12),
    expected: ["10 step a 0→1"],
  },
  {
    name: "scales up when a replica starts in time",
    pool: { replicas: { max: 4 } },
    replicas: "a:0 b:0",
    options: { coldStartSeconds: 1 },
    ticks: ticks(0, 10, 20),
    expected: ["5 scale 3", "10 scale 4"],
  },
  {
    name: "steps down below max when cold start exceeds SLO",
    pool: { replicas: { max: 4 } },
    replicas: "a:0 b:0",
    options: { coldStartSeconds: 30 },
    ticks: ticks(0, 12, 12),
    expected: ["5 scale 3", "10 step a 0→1"],
    note: "adding a replica waits until c has started",
  },
  {
    name: "waits for dwell between steps",
    replicas: "a:0 b:0",
    ticks: ticks(0, 29, 12),
    expected: ["10 step a 0→1"],
    note: "the next ladder step waits for the 20 s dwell (19 s since the last step)",
  },
  {
    name: "repeats steps one replica at a time",
    replicas: "a:0 b:0",
    ticks: ticks(0, 100, 12),
    expected: ["10 step a 0→1", "30 step b 0→1", "50 step a 1→2", "70 step b 1→2"],
    note: "no ready replica can step further down",
  },
  {
    name: "steps up lowest rung first",
    pool: { replicas: { min: 2 } },
    replicas: "a:1 b:2",
    ticks: ticks(0, 120, 1),
    expected: ["60 step b 2→1", "80 step a 1→0", "100 step b 1→0"],
  },
  {
    name: "steps up before scaling down",
    replicas: "a:0 b:1",
    ticks: ticks(0, 70, 1),
    expected: ["60 step b 1→0", "61 scale 1"],
  },
  {
    name: "no scale down while stepped down",
    pool: { autoscaling: { stepUpAfterSeconds: 1000 } },
    replicas: "a:0 b:1",
    ticks: ticks(0, 300, 1, 10),
    expected: [],
    note: "removing a replica waits until every replica is back on Q4_K_M; b is on Q3_K_M",
  },
  {
    name: "no action inside hysteresis band",
    replicas: "a:1 b:1",
    ticks: ticks(0, 300, 6, 10),
    expected: [],
  },
  {
    name: "band resets the high timer",
    replicas: "a:0 b:0",
    ticks: [...ticks(0, 8, 12), ...ticks(9, 12, 6), ...ticks(13, 21, 12)],
    expected: [],
  },
  {
    name: "floor reserve keeps one at Q3_K_M",
    pool: { qualityFloors: { json_schema: "Q3_K_M" }, autoscaling: { keepAtOrAboveFloor: 1 } },
    replicas: "a:0 b:0",
    ticks: ticks(0, 120, 12),
    expected: ["10 step a 0→1", "30 step b 0→1", "50 step a 1→2"],
    note: "b stays on Q3_K_M: the pool keeps 1 ready replicas at or above the Q3_K_M quality floor",
  },
  {
    name: "skips rung that is not faster",
    replicas: "a:0 b:0",
    options: { decodeRates: [40, 41, 60] },
    ticks: ticks(0, 10, 12),
    expected: ["10 step a 0→2"],
    note: "skipped Q3_K_M: it decodes 41 tokens/s, less than 5% faster than Q4_K_M at 40 tokens/s",
  },
  {
    name: "steps to unmeasured rung",
    replicas: "a:0 b:0",
    options: { decodeRates: [40, undefined, 60] },
    ticks: ticks(0, 10, 12),
    expected: ["10 step a 0→1"],
  },
  {
    name: "no step without faster rung",
    replicas: "a:0 b:0",
    options: { decodeRates: [40, 40, 41] },
    ticks: ticks(0, 40, 12),
    expected: [],
    note: "no ready replica can step further down",
  },
  {
    name: "step up skips rung that is not faster",
    pool: { replicas: { min: 2 } },
    replicas: "a:0 b:2",
    options: { decodeRates: [40, 41, 60] },
    ticks: ticks(0, 60, 1),
    expected: ["60 step b 2→0"],
    note: "skipped Q3_K_M: it decodes 41 tokens/s, less than 5% faster than Q4_K_M at 40 tokens/s",
  },
  {
    name: "scales from zero at once",
    pool: { replicas: { min: 0 } },
    replicas: "",
    ticks: [{ at: 0, demand: 1, demandWithoutReplica: true }],
    expected: ["0 scale 1"],
  },
  {
    name: "scales down after delay to min",
    pool: { replicas: { min: 1, max: 3 } },
    replicas: "a:0 b:0 c:0",
    ticks: ticks(0, 600, 1, 10),
    expected: ["60 scale 2", "120 scale 1"],
  },
  {
    name: "scales up to min at once",
    pool: { replicas: { min: 2, max: 3 } },
    replicas: "a:0",
    ticks: ticks(0, 10, 0),
    expected: ["0 scale 2"],
  },
  {
    name: "no 0→1→0 flap after cold start",
    pool: { replicas: { min: 0, max: 1 } },
    replicas: "",
    options: { coldStartSeconds: 40 },
    ticks: [{ at: 0, demand: 1, demandWithoutReplica: true }, ...ticks(2, 200, 0, 2)],
    expected: ["0 scale 1", "100 scale 0"],
  },
];

describe("planner", () => {
  for (const scenario of scenarios) {
    test(scenario.name, () => {
      const simulation = new Simulation(makePool(scenario.pool), scenario.replicas, scenario.options).run(scenario.ticks);

      assert.deepEqual(simulation.actions, scenario.expected);
      if (scenario.note !== undefined) {
        assert.ok(simulation.notes.includes(scenario.note), `no note "${scenario.note}" among:\n${[...new Set(simulation.notes)].join("\n")}`);
      }
    });
  }

  test("alternating load does not flap", () => {
    const pool = makePool({ replicas: { min: 1, max: 3 }, autoscaling: { smoothingSeconds: 10 } });
    const alternating = Array.from({ length: 20 }, (_, index) => ({ at: index * 2, demand: index % 2 === 0 ? 1 : 13 }));
    const simulation = new Simulation(pool, "a:0 b:0", { coldStartSeconds: 30 });

    const pressures = alternating.map((tick) => simulation.tick(tick).pressure);

    assert.deepEqual(simulation.actions, []);
    assert.ok(Math.max(...pressures) <= pool.autoscaling.pressureHigh, `pressures: ${pressures.join(", ")}`);
  });

  test("actions give their reasons", () => {
    const simulation = new Simulation(makePool({ replicas: { max: 4 } }), "a:0 b:0", { coldStartSeconds: 30 }).run(ticks(0, 4, 12));

    const scale = simulation.tick({ at: 5, demand: 12 });
    const step = simulation.run(ticks(6, 9, 12)).tick({ at: 10, demand: 12 });

    assert.deepEqual(scale.actions.map((action) => action.reason), ["pressure 1.50 above 1 for 5 s, 2 of at most 4 replicas"]);
    assert.deepEqual(step.actions.map((action) => action.reason), [
      "pressure 1.50 above 1 for 10 s, a new replica takes 30 s to start, longer than the 1.5 s time-to-first-token SLO",
    ]);
  });

  test("step waits for a switching replica", () => {
    const pool = makePool();
    const simulation = new Simulation(pool, "a:0 b:0").run(ticks(0, 9, 12));
    simulation.replicas[1]!.swapping = true;

    const plan = simulation.tick({ at: 10, demand: 12 });

    assert.deepEqual(plan.actions, []);
    assert.deepEqual(plan.notes, ["the next ladder step waits until b has switched variants"]);
  });
});

describe("planner pressure", () => {
  const pool = makePool({ autoscaling: { smoothingSeconds: 10 } });
  const observation: PoolObservation = {
    at: 0,
    replicas: [
      { id: "a", state: "ready", rung: 0, swapping: false, slots: 4, outstanding: 4 },
      { id: "b", state: "ready", rung: 1, swapping: true, slots: 4, outstanding: 2 },
      { id: "c", state: "draining", rung: 0, swapping: false, slots: 4, outstanding: 3 },
      { id: "d", state: "starting", rung: 0, swapping: false, slots: 4, outstanding: 0 },
    ],
    queueDepth: 3,
    saturatedOverflowRate: 0.5,
    serviceSeconds: 2,
    decodeRates: [],
    coldStartSeconds: undefined,
    demandWithoutReplica: false,
  };

  test("demand counts busy, queue and overflow", () => {
    assert.equal(measureDemand(observation), 4 + 2 + 3 + 0.5 * 2);
  });

  test("pressure is demand over ready slots", () => {
    const { plan } = planPool(pool, observation, initialPlannerState());

    assert.equal(plan.pressure, 10 / 8);
  });

  test("no ready slot with demand is high", () => {
    const idle = { ...observation, replicas: observation.replicas.slice(3), saturatedOverflowRate: 0 };

    const { plan } = planPool(pool, idle, initialPlannerState());

    assert.equal(plan.pressure, 2 * pool.autoscaling.pressureHigh);
  });

  test("no ready slot without demand is zero", () => {
    const idle = { ...observation, replicas: [], queueDepth: 0, saturatedOverflowRate: 0 };

    const { plan } = planPool(pool, idle, initialPlannerState());

    assert.equal(plan.pressure, 0);
  });

  test("smoothing weighs elapsed time", () => {
    const previous: PlannerState = { ...initialPlannerState(), demand: 0, observedAt: 0 };
    const short = planPool(pool, { ...observation, at: 1000 }, previous).state.demand;
    const long = planPool(pool, { ...observation, at: 10_000 }, previous).state.demand;

    assert.ok(Math.abs(short - 10 * (1 - Math.exp(-0.1))) < 1e-9, `after 1 s: ${short}`);
    assert.ok(Math.abs(long - 10 * (1 - Math.exp(-1))) < 1e-9, `after 10 s: ${long}`);
  });

  test("added capacity lowers pressure at once", () => {
    const steady = new Simulation(makePool({ autoscaling: { smoothingSeconds: 10 } }), "a:0 b:0").run(ticks(0, 30, 12));
    steady.replicas.push({ id: "c", rung: 0, state: "ready", swapping: false, readyAt: 0 });

    const plan = steady.tick({ at: 31, demand: 12 });

    assert.ok(Math.abs(plan.pressure - 1) < 1e-9, `pressure ${plan.pressure}`);
  });
});

describe("planner state file", () => {
  const folder = mkdtempSync(join(tmpdir(), "spillway-planner-"));
  after(() => rmSync(folder, { recursive: true, force: true }));

  function captureLogger(): { logger: Logger; lines: string[] } {
    const lines: string[] = [];
    return { logger: pino({ level: "info" }, { write: (line: string) => lines.push(line) }), lines };
  }

  /** Saves the run's state, loads it back as a restarted controller would, and continues the run. */
  function restart(simulation: Simulation, name: string): void {
    const path = join(folder, name, "planner-state.json");
    const { logger } = captureLogger();
    savePlannerStates(path, new Map([["npc", simulation.state]]), logger);
    const loaded = loadPlannerStates(path, logger).get("npc");
    assert.ok(loaded, "the saved state did not load");
    simulation.state = loaded;
  }

  test("missing file loads empty", () => {
    const { logger, lines } = captureLogger();

    const states = loadPlannerStates(join(folder, "missing.json"), logger);

    assert.equal(states.size, 0);
    assert.deepEqual(lines, []);
  });

  test("corrupt file loads empty with warning", () => {
    const path = join(folder, "corrupt.json");
    writeFileSync(path, "{ not json");
    const { logger, lines } = captureLogger();

    const states = loadPlannerStates(path, logger);

    assert.equal(states.size, 0);
    assert.equal(lines.length, 1);
    assert.match(lines[0] ?? "", /Ignored an invalid planner state file/);
  });

  test("round trip keeps unset times", () => {
    const path = join(folder, "round-trip", "state.json");
    const state: PlannerState = { pressure: 1.25, demand: 10, highSince: 5000, lowSince: undefined, lastStepAt: 3000, lastScaleAt: undefined, observedAt: 6000 };
    const { logger, lines } = captureLogger();

    savePlannerStates(path, new Map([["npc", state]]), logger);
    const loaded = loadPlannerStates(path, logger);

    assert.deepEqual(loaded.get("npc"), state);
    assert.deepEqual(readdirSync(join(folder, "round-trip")), ["state.json"]);
    assert.deepEqual(lines, []);
  });

  test("failed save logs an error", () => {
    const blocker = join(folder, "a-file");
    writeFileSync(blocker, "");
    const { logger, lines } = captureLogger();

    savePlannerStates(join(blocker, "state.json"), new Map([["npc", initialPlannerState()]]), logger);

    assert.equal(lines.length, 1);
    assert.match(lines[0] ?? "", /Failed to save the planner state/);
  });

  test("restart mid-dwell does not step early", () => {
    const simulation = new Simulation(makePool(), "a:0 b:0").run(ticks(0, 12, 12));
    restart(simulation, "dwell");

    simulation.run(ticks(14, 32, 12, 2));

    assert.deepEqual(simulation.actions, ["10 step a 0→1", "30 step b 0→1"]);
  });

  test("restart adds one replica at a time", () => {
    const simulation = new Simulation(makePool({ replicas: { max: 4 } }), "a:0", { coldStartSeconds: 1 }).run(ticks(0, 4, 12));
    restart(simulation, "burst");

    simulation.run(ticks(5, 30, 12));

    assert.deepEqual(simulation.actions, ["5 scale 2", "10 scale 3"]);
  });
});
