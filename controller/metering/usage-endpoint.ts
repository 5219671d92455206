import type { Request, RequestHandler, Response } from "express";

import { invalidRequest } from "../../api/errors.ts";
import type { Ledger } from "./ledger.ts";
import type { UsageGroup, UsageRow } from "./types.ts";

export const usageGroups = ["tenant", "pool", "backend"] as const satisfies readonly UsageGroup[];

/** The body of `GET /v1/spillway/usage`, with `from` and `to` in ISO 8601 UTC. */
export interface UsageResponse {
  object: "spillway.usage";
  from: string;
  to: string;
  group_by: UsageGroup;
  data: UsageRow[];
  total: UsageRow;
}

export interface UsageQuery {
  from: number;
  to: number;
  groupBy: UsageGroup;
}

export interface UsageHandlerOptions {
  ledger: Pick<Ledger, "summary">;
  /** Clock in milliseconds since the Unix epoch, for the default range. */
  now?: () => number;
}

/**
 * Creates the handler of `GET /v1/spillway/usage?from=&to=&group_by=`. Invalid parameters throw an
 * `ApiError` (400, naming the parameter) for the server's error boundary. Admin authentication is the
 * gateway's job, before this handler.
 */
export function createUsageHandler(options: UsageHandlerOptions): RequestHandler {
  const now = options.now ?? Date.now;
  return (request: Request, response: Response) => {
    const query = parseUsageQuery(request.query, now());
    const { rows, total } = options.ledger.summary(query);
    const body: UsageResponse = {
      object: "spillway.usage",
      from: new Date(query.from).toISOString(),
      to: new Date(query.to).toISOString(),
      group_by: query.groupBy,
      data: rows,
      total,
    };
    response.json(body);
  };
}

/**
 * Parses the query parameters. `from` defaults to the start of the current UTC day, `to` to now and
 * `group_by` to tenant. `from` must come before `to`.
 */
export function parseUsageQuery(query: Record<string, unknown>, now: number): UsageQuery {
  const to = parseTimeParameter(query.to, "to") ?? now;
  const from = parseTimeParameter(query.from, "from") ?? startOfUtcDay(now);
  if (from >= to) {
    throw invalidRequest(
      `Invalid 'to': ${new Date(to).toISOString()} is not after 'from' (${new Date(from).toISOString()}). Pass a 'from' before it.`,
      "to",
    );
  }

  const groupBy = query.group_by ?? "tenant";
  if (!isUsageGroup(groupBy)) {
    throw invalidRequest(`Invalid 'group_by': ${describe(groupBy)}. Expected one of ${usageGroups.join(", ")}.`, "group_by");
  }
  return { from, to, groupBy };
}

/**
 * Parses a timestamp in Unix seconds (fractions allowed) or ISO 8601: a date, or a date and time
 * with an optional offset, read as UTC when it has none. Returns milliseconds since the Unix epoch,
 * or undefined for text in neither form or naming a day or time that does not exist.
 */
export function parseTimestamp(text: string): number | undefined {
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const match =
    /^(?<year>\d{4})-(?<month>\d{2})-(?<day>\d{2})(?:T(?<hour>\d{2}):(?<minute>\d{2})(?::(?<second>\d{2})(?:\.\d+)?)?(?<offset>Z|[+-]\d{2}:\d{2})?)?$/.exec(text);
  const parts = match?.groups;
  if (parts === undefined) return undefined;

  const [year, month, day] = [parts.year, parts.month, parts.day].map(Number) as [number, number, number];
  const date = new Date(Date.UTC(year, month - 1, day));
  const dateExists = date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
  const timeExists = Number(parts.hour ?? 0) <= 23 && Number(parts.minute ?? 0) <= 59 && Number(parts.second ?? 0) <= 59;
  if (!dateExists || !timeExists) return undefined;

  // JavaScript reads a date and time without an offset as local time, which would leak the server's zone in.
  const isLocalTime = parts.hour !== undefined && parts.offset === undefined;
  return Date.parse(isLocalTime ? `${text}Z` : text);
}

function parseTimeParameter(value: unknown, name: "from" | "to"): number | undefined {
  if (value === undefined) return undefined;
  const milliseconds = typeof value === "string" ? parseTimestamp(value) : undefined;
  if (milliseconds === undefined) {
    throw invalidRequest(
      `Invalid '${name}': ${describe(value)}. Expected Unix seconds or an ISO 8601 date or time, such as 2026-03-01 or 2026-03-01T12:00:00Z.`,
      name,
    );
  }
  return milliseconds;
}

function isUsageGroup(value: unknown): value is UsageGroup {
  return usageGroups.some((group) => group === value);
}

function startOfUtcDay(epochMilliseconds: number): number {
  const date = new Date(epochMilliseconds);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate());
}

function describe(value: unknown): string {
  return typeof value === "string" ? `'${value}'` : "the parameter is repeated or not text";
}
