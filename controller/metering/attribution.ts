/** Local tokens that one tenant used on one quant of a pool. */
export interface TokenShare {
  tenant: string;
  quant: string | null;
  tokens: number;
}

/**
 * Local tokens per pool, tenant and quant since the pool's last replica-time accrual: the weights
 * that split the next accrual's cost.
 */
export class AttributionWindow {
  readonly #pools = new Map<string, Map<string, TokenShare>>();

  add(pool: string, tenant: string, quant: string | null, tokens: number): void {
    let shares = this.#pools.get(pool);
    if (shares === undefined) {
      shares = new Map();
      this.#pools.set(pool, shares);
    }
    const key = JSON.stringify([tenant, quant]);
    const share = shares.get(key);
    if (share === undefined) shares.set(key, { tenant, quant, tokens });
    else share.tokens += tokens;
  }

  sharesOf(pool: string): TokenShare[] {
    return [...(this.#pools.get(pool)?.values() ?? [])].filter((share) => share.tokens > 0);
  }

  clear(pool: string): void {
    this.#pools.delete(pool);
  }

  *entries(): IterableIterator<[string, TokenShare]> {
    for (const [pool, shares] of this.#pools) {
      for (const share of shares.values()) yield [pool, share];
    }
  }
}

/**
 * Splits a whole amount in proportion to the weights. Each part is the difference of rounded
 * cumulative shares, so the parts are whole numbers, each within 1 of its exact share, and they sum
 * to `total` exactly whatever the float rounding.
 */
export function splitProportionally(total: number, weights: readonly number[]): number[] {
  const weightSum = weights.reduce((sum, weight) => sum + weight, 0);
  if (weightSum <= 0) throw new RangeError("Cannot split an amount over weights that sum to 0.");

  const parts: number[] = [];
  let cumulativeWeight = 0;
  let allocated = 0;
  weights.forEach((weight, index) => {
    cumulativeWeight += weight;
    const cumulative = index === weights.length - 1 ? total : Math.round((total * cumulativeWeight) / weightSum);
    parts.push(cumulative - allocated);
    allocated = cumulative;
  });
  return parts;
}
