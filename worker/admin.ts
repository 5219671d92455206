import { createHash, timingSafeEqual } from "node:crypto";

import express, { type NextFunction, type Request, type Response } from "express";

import { ApiError, invalidRequest } from "../api/errors.ts";
import type { components } from "../api/generated.ts";
import { jsonBody } from "../api/http.ts";
import { notReady, readinessState, type WorkerState } from "./state.ts";

export interface AdminKey {
  /** The environment variable the key comes from, named in the error when it is unset. */
  variable: string;
  /** The key, read once at start; undefined disables the admin endpoints. */
  value: string | undefined;
}

/** Creates the operator's endpoints under `/admin`, each behind the admin key. */
export function adminRoutes(state: WorkerState, key: AdminKey, maxBodyBytes: number): express.Router {
  const router = express.Router();
  router.use("/admin", requireAdminKey(key));

  router.post("/admin/variant", jsonBody(maxBodyBytes), async (req, res) => {
    const quant = parseVariantRequest(req.body);
    const readiness = readinessState(state);
    if (state.variants === undefined || (readiness !== "ready" && readiness !== "swapping" && readiness !== "failed")) {
      throw notReady(readiness);
    }
    const body: components["schemas"]["SwapVariantResponse"] = await state.variants.swap(quant);
    res.json(body);
  });
  return router;
}

function requireAdminKey(key: AdminKey) {
  const expected = key.value === undefined ? undefined : digest(key.value);
  return (req: Request, _res: Response, next: NextFunction) => {
    if (expected === undefined) {
      throw new ApiError(403, `The admin endpoints are disabled: set the environment variable ${key.variable} to an admin key and restart the worker.`, {
        code: "admin_disabled",
      });
    }
    const presented = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    // Comparing digests keeps the time taken independent of where the keys differ.
    if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
      throw new ApiError(401, "This endpoint needs the worker's admin key as 'Authorization: Bearer <key>'.", {
        code: "invalid_api_key",
      });
    }
    next();
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** Reads `{"quant": "Q3_K_M"}`; the name is matched without regard to case. */
function parseVariantRequest(body: unknown): string {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidRequest("The body must be a JSON object such as {\"quant\": \"Q4_K_M\"}.", null);
  }
  const { quant, ...rest } = body as Record<string, unknown>;
  const unknownField = Object.keys(rest)[0];
  if (unknownField !== undefined) throw invalidRequest(`Unknown field '${unknownField}'. The body has only 'quant'.`, unknownField);
  if (typeof quant !== "string" || quant.trim() === "") {
    throw invalidRequest("'quant' must be the quantization name of a rung on this worker's ladder, such as \"Q4_K_M\".", "quant");
  }
  return quant.trim().toUpperCase();
}
