import type { RawChatRequest } from "../../api/chat-request.ts";
import { modelNotFound } from "../../api/errors.ts";
import type { PoolConfig, RequestClass, SpillwayConfig } from "../config/schema.ts";

/** The model name that makes the gateway choose a pool by the routing rules. */
export const autoModel = "auto";

/** Classifies a request for its quality floor: the strictest output requirement wins. */
export function requestClassOf(request: RawChatRequest): RequestClass {
  const format = request.response_format?.type;
  if (format === "json_schema") return "json_schema";
  if (format === "json_object") return "json_object";
  if ((request.tools?.length ?? 0) > 0 && request.tool_choice !== "none") return "tools";
  return "default";
}

/** Maps a request's `model` to a pool by name, alias or, for "auto", the first matching routing rule. */
export function resolvePool(config: SpillwayConfig, request: RawChatRequest): PoolConfig {
  if (request.model === autoModel) return autoPool(config, request);
  const pool = config.pools.find((candidate) => candidate.name === request.model || candidate.aliases.includes(request.model));
  if (pool === undefined) throw modelNotFound(request.model, modelNames(config));
  return pool;
}

/** Returns every name a client may send as `model`, pools first. */
export function modelNames(config: SpillwayConfig): string[] {
  return [...config.pools.map((pool) => pool.name), ...config.pools.flatMap((pool) => pool.aliases), autoModel];
}

function autoPool(config: SpillwayConfig, request: RawChatRequest): PoolConfig {
  const requestClass = requestClassOf(request);
  const task = request.metadata?.task;
  for (const route of config.routing.auto) {
    const { responseFormat, tools, task: routeTask } = route.when;
    if (responseFormat !== undefined && responseFormat !== requestClass) continue;
    if (tools !== undefined && tools !== (requestClass === "tools")) continue;
    if (routeTask !== undefined && routeTask !== task) continue;
    return poolNamed(config, route.pool);
  }
  const fallback = config.routing.defaultPool ?? config.pools[0]?.name;
  return poolNamed(config, fallback ?? "");
}

function poolNamed(config: SpillwayConfig, name: string): PoolConfig {
  const pool = config.pools.find((candidate) => candidate.name === name);
  // The config schema checks that routing names existing pools, so this only fails on a programming error.
  if (pool === undefined) throw new Error(`routing names unknown pool '${name}'`);
  return pool;
}

/**
 * Returns the index of the lowest ladder rung a request class may be served from. A class without a
 * floor may use every rung.
 */
export function floorRung(pool: PoolConfig, requestClass: RequestClass): number {
  const floor = pool.qualityFloors[requestClass] ?? (requestClass === "default" ? undefined : pool.qualityFloors.default);
  if (floor === undefined) return pool.variants.length - 1;
  const rung = pool.variants.findIndex((variant) => variant.quant === floor);
  return rung < 0 ? pool.variants.length - 1 : rung;
}
