import pLimit from 'p-limit'

/** Runs `fn` over `items` with at most `limit` calls in flight; results keep the input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const run = pLimit(Math.max(1, limit))
  return Promise.all(items.map((item, i) => run(() => fn(item, i))))
}
