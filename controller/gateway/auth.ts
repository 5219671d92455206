import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

import type { Request } from "express";

import { ApiError } from "../../api/errors.ts";
import type { SpillwayConfig } from "../config/schema.ts";
import { StartupError } from "../startup-error.ts";

/** The tenant name of every request when no API keys are configured. */
export const anonymousTenant = "anonymous";

/**
 * Maps bearer API keys to tenants. Keys are read once at start from the environment variable or file
 * each tenant names, and compared by SHA-256 digest in constant time; they are never logged.
 */
export class KeyRing {
  readonly #tenants: Array<{ name: string; digest: Buffer }>;
  readonly #adminDigest: Buffer | undefined;

  constructor(config: SpillwayConfig, env: NodeJS.ProcessEnv = process.env) {
    this.#tenants = config.auth.keys.map((tenant) => ({ name: tenant.name, digest: digest(readKey(tenant, env)) }));
    const adminKey = env[config.auth.adminKeyEnv];
    this.#adminDigest = adminKey === undefined || adminKey === "" ? undefined : digest(adminKey);
  }

  /** Whether any tenant key is configured; without keys the gateway must stay on loopback. */
  get open(): boolean {
    return this.#tenants.length === 0;
  }

  /** Returns the tenant of a request, or throws a 401 `invalid_api_key`. */
  tenantOf(req: Request): string {
    if (this.open) return anonymousTenant;
    const key = bearerToken(req);
    if (key !== undefined) {
      const presented = digest(key);
      for (const tenant of this.#tenants) if (timingSafeEqual(presented, tenant.digest)) return tenant.name;
    }
    throw new ApiError(401, "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.", { code: "invalid_api_key" });
  }

  /** Checks the admin key for the `/v1/spillway/*` endpoints. Without keys at all (loopback only), admin is open. */
  requireAdmin(req: Request): void {
    if (this.open && this.#adminDigest === undefined) return;
    if (this.#adminDigest === undefined) {
      throw new ApiError(403, "Admin endpoints are disabled: set the admin key's environment variable on the controller.", {
        type: "permission_error",
        code: "admin_disabled",
      });
    }
    const key = bearerToken(req);
    if (key === undefined || !timingSafeEqual(digest(key), this.#adminDigest)) {
      throw new ApiError(401, "This endpoint needs the admin key as 'Authorization: Bearer <key>'.", { code: "invalid_api_key" });
    }
  }
}

function readKey(tenant: SpillwayConfig["auth"]["keys"][number], env: NodeJS.ProcessEnv): string {
  if (tenant.keyEnv !== undefined) {
    const value = env[tenant.keyEnv];
    if (value === undefined || value.trim() === "") {
      throw new StartupError(`The API key of tenant '${tenant.name}' is missing: set the environment variable ${tenant.keyEnv}.`);
    }
    return value.trim();
  }
  const file = tenant.keyFile ?? "";
  try {
    const value = readFileSync(file, "utf8").trim();
    if (value === "") throw new Error("the file is empty");
    return value;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new StartupError(`The API key of tenant '${tenant.name}' could not be read from ${file}: ${reason}.`, { cause: error });
  }
}

function bearerToken(req: Request): string | undefined {
  const header = req.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  return match?.[1];
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

/** Whether a listen address only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}
