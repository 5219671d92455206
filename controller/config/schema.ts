import { z } from "zod";

/**
 * The one configuration schema: `spillway.yaml`, the Helm chart's `config:` block and (for the pool
 * part) the ModelPool resource all parse through it, so a key means the same everywhere. Defaults live
 * here, next to the key they belong to.
 */

const quant = z.string().regex(/^[A-Za-z0-9_]+$/, "must be a quantization name such as Q4_K_M, Q8_0 or F16");

export const variantSchema = z.strictObject({
  /** Quantization name, such as Q4_K_M. */
  quant,
  /** A GGUF path or a node-llama-cpp URI such as `hf:<user>/<repo>:Q4_K_M`. */
  model: z.string().min(1),
});

const autoscalingDefaults = {
  pressureHigh: 1,
  pressureLow: 0.5,
  scaleUpAfterSeconds: 5,
  scaleDownAfterSeconds: 60,
  stepDownAfterSeconds: 10,
  stepUpAfterSeconds: 60,
  minDwellSeconds: 20,
  keepAtOrAboveFloor: 1,
  smoothingSeconds: 10,
  minStepSpeedup: 1.05,
};

/** Settings of the control loop that scales a pool and moves its replicas along the ladder. */
export const autoscalingSchema = z
  .strictObject({
    /** Pressure (demand over ready slot capacity) above which the pool counts as overloaded. */
    pressureHigh: z.number().positive().default(autoscalingDefaults.pressureHigh),
    /** Pressure below which the pool counts as idle enough to step up or scale down. */
    pressureLow: z.number().min(0).default(autoscalingDefaults.pressureLow),
    /** Seconds of high pressure before a replica is added. */
    scaleUpAfterSeconds: z.number().min(0).default(autoscalingDefaults.scaleUpAfterSeconds),
    /** Seconds of low pressure before a replica is removed. */
    scaleDownAfterSeconds: z.number().min(0).default(autoscalingDefaults.scaleDownAfterSeconds),
    /** Seconds of high pressure, with no replica to add in time, before one replica steps down a rung. */
    stepDownAfterSeconds: z.number().min(0).default(autoscalingDefaults.stepDownAfterSeconds),
    /** Seconds of low pressure before one replica steps back up a rung. */
    stepUpAfterSeconds: z.number().min(0).default(autoscalingDefaults.stepUpAfterSeconds),
    /** Minimum time between two ladder steps of the pool. */
    minDwellSeconds: z.number().min(0).default(autoscalingDefaults.minDwellSeconds),
    /** Replicas kept at or above the pool's highest quality floor, so floor-bound requests keep a local home. */
    keepAtOrAboveFloor: z.int().min(0).default(autoscalingDefaults.keepAtOrAboveFloor),
    /** Time constant of the pressure moving average. */
    smoothingSeconds: z.number().positive().default(autoscalingDefaults.smoothingSeconds),
    /**
     * How much faster (measured decode tokens per second) a lower rung must be than the current one to be
     * worth its quality cost; a rung below this is skipped. 1.05 means at least 5% faster.
     */
    minStepSpeedup: z.number().min(0).default(autoscalingDefaults.minStepSpeedup),
  })
  .refine((autoscaling) => autoscaling.pressureLow < autoscaling.pressureHigh, {
    message: "pressureLow must be below pressureHigh, or the pool would step up and down in turn",
    path: ["pressureLow"],
  });

export const requestClasses = ["json_schema", "json_object", "tools", "default"] as const;
export type RequestClass = (typeof requestClasses)[number];

export const poolSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, "must be a DNS label: lowercase letters, digits and dashes"),
    aliases: z.array(z.string().min(1)).default([]),
    /** Highest quality first: the ladder a replica steps down under load. */
    variants: z.array(variantSchema).min(1),
    /** Lowest rung each request class may be served from; classes not listed may use any rung. */
    qualityFloors: z.partialRecord(z.enum(requestClasses), quant).default({}),
    replicas: z
      .strictObject({ min: z.int().min(0).default(1), max: z.int().min(1).default(1) })
      .default({ min: 1, max: 1 }),
    slotsPerReplica: z.int().min(1).max(256).default(4),
    /** Requests that may wait for a local slot before overflow or 429. */
    queueSize: z.int().min(0).default(16),
    /** Tokens of context per slot. */
    contextSize: z.int().min(64).default(4096),
    /** CPU threads per replica; unset divides the machine's CPUs among the replicas. */
    threadsPerReplica: z.int().min(1).optional(),
    slo: z.strictObject({ timeToFirstTokenSeconds: z.number().positive().default(1.5) }).default({ timeToFirstTokenSeconds: 1.5 }),
    /** Cost of one replica per hour, GPU or CPU share included: the price of local tokens. */
    costPerReplicaHourUsd: z.number().min(0).default(0),
    autoscaling: autoscalingSchema.default(autoscalingDefaults),
  })
  .superRefine((pool, context) => {
    if (pool.replicas.min > pool.replicas.max) {
      context.addIssue({ code: "custom", path: ["replicas", "min"], message: `must be at most replicas.max (${pool.replicas.max})` });
    }
    const quants = pool.variants.map((variant) => variant.quant);
    quants.forEach((name, index) => {
      if (quants.indexOf(name) !== index) {
        context.addIssue({ code: "custom", path: ["variants", index, "quant"], message: `repeats ${name}; each rung needs its own quant` });
      }
    });
    for (const [requestClass, floor] of Object.entries(pool.qualityFloors)) {
      if (!quants.includes(floor)) {
        context.addIssue({
          code: "custom",
          path: ["qualityFloors", requestClass],
          message: `is ${floor}, which is not one of this pool's variants (${quants.join(", ")})`,
        });
      }
    }
  });

const budgetAction = z.enum(["local_only", "reject"]);

export const tenantSchema = z
  .strictObject({
    name: z.string().min(1),
    /** Environment variable that contains the tenant's API key. */
    keyEnv: z.string().min(1).optional(),
    /** File that contains the tenant's API key (a mounted Secret, say). */
    keyFile: z.string().min(1).optional(),
    budgetUsdPerDay: z.number().min(0).optional(),
    budgetUsdPerMonth: z.number().min(0).optional(),
    /** At the budget: serve locally only (no overflow), or reject with 429. */
    onBudgetExhausted: budgetAction.default("local_only"),
  })
  .refine((tenant) => (tenant.keyEnv === undefined) !== (tenant.keyFile === undefined), {
    message: "needs exactly one of keyEnv or keyFile",
  });

const routeSchema = z.strictObject({
  when: z.strictObject({
    responseFormat: z.enum(["json_schema", "json_object"]).optional(),
    tools: z.boolean().optional(),
    /** Matches the request's `metadata.task`. */
    task: z.string().optional(),
  }),
  pool: z.string().min(1),
});

export const geminiSchema = z
  .strictObject({
    model: z.string().min(1).default("gemini-3-flash-preview"),
    baseUrl: z.url().default("https://generativelanguage.googleapis.com/v1beta/openai/"),
    apiKeyEnv: z.string().min(1).optional(),
    apiKeyFile: z.string().min(1).optional(),
    pricesUsdPerMillion: z
      .strictObject({
        input: z.number().min(0).default(0.5),
        cachedInput: z.number().min(0).default(0.05),
        output: z.number().min(0).default(3),
      })
      .default({ input: 0.5, cachedInput: 0.05, output: 3 }),
    connectTimeoutSeconds: z.number().positive().default(10),
    /** Maximum silence between two stream events. */
    idleTimeoutSeconds: z.number().positive().default(60),
    /** Attempts per request, the first included; retries happen only before the first byte. */
    maxAttempts: z.int().min(1).max(10).default(3),
    circuitBreaker: z
      .strictObject({
        /** Consecutive failed requests that open the circuit. */
        failureThreshold: z.int().min(1).default(5),
        coolDownSeconds: z.number().positive().default(30),
      })
      .default({ failureThreshold: 5, coolDownSeconds: 30 }),
  })
  .refine((gemini) => !(gemini.apiKeyEnv !== undefined && gemini.apiKeyFile !== undefined), {
    message: "set apiKeyEnv or apiKeyFile, not both",
  });

export const configSchema = z
  .strictObject({
    gateway: z
      .strictObject({
        host: z.string().min(1).default("127.0.0.1"),
        port: z.int().min(0).max(65535).default(8080),
        maxBodyBytes: z.int().min(1024).default(4 * 1024 * 1024),
      })
      .default({ host: "127.0.0.1", port: 8080, maxBodyBytes: 4 * 1024 * 1024 }),
    auth: z
      .strictObject({
        keys: z.array(tenantSchema).default([]),
        adminKeyEnv: z.string().min(1).default("SPILLWAY_ADMIN_KEY"),
      })
      .default({ keys: [], adminKeyEnv: "SPILLWAY_ADMIN_KEY" }),
    /**
     * The pools served. `spillway up` needs at least one; `spillway controller` takes its pools from the
     * ModelPool resources of its namespace instead, so there the list stays empty.
     */
    pools: z.array(poolSchema).default([]),
    routing: z
      .strictObject({
        /** Rules for `model: "auto"`, first match wins. */
        auto: z.array(routeSchema).default([]),
        /** Pool for `model: "auto"` when no rule matches; the first pool when unset. */
        defaultPool: z.string().optional(),
      })
      .default({ auto: [] }),
    overflow: z
      .strictObject({
        enabled: z.boolean().default(true),
        gemini: geminiSchema.optional(),
      })
      .default({ enabled: true }),
  })
  .superRefine((config, context) => {
    const names = new Map<string, string>();
    config.pools.forEach((pool, index) => {
      for (const name of [pool.name, ...pool.aliases]) {
        const owner = names.get(name);
        if (owner !== undefined) {
          context.addIssue({ code: "custom", path: ["pools", index], message: `uses the name '${name}', already taken by pool '${owner}'` });
        }
        names.set(name, pool.name);
      }
    });
    // Without pools in the file (in a cluster), routes name ModelPools that may appear at any time.
    if (config.pools.length === 0) return;
    const poolNames = new Set(config.pools.map((pool) => pool.name));
    config.routing.auto.forEach((route, index) => {
      if (!poolNames.has(route.pool)) {
        context.addIssue({ code: "custom", path: ["routing", "auto", index, "pool"], message: `names '${route.pool}', which is not a pool` });
      }
    });
    if (config.routing.defaultPool !== undefined && !poolNames.has(config.routing.defaultPool)) {
      context.addIssue({ code: "custom", path: ["routing", "defaultPool"], message: `names '${config.routing.defaultPool}', which is not a pool` });
    }
  });

export type SpillwayConfig = z.infer<typeof configSchema>;
export type PoolConfig = z.infer<typeof poolSchema>;
export type TenantConfig = z.infer<typeof tenantSchema>;
export type GeminiConfig = z.infer<typeof geminiSchema>;
export type AutoscalingConfig = z.infer<typeof autoscalingSchema>;
