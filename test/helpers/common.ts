// Small things every suite needs.
import { createHash } from 'node:crypto'
import type { Storage } from '../../src/index.js'

export const KiB = 1024
export const MiB = 1024 * 1024

export const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** Checkpointer options that keep a test's output clean. */
export const quiet = { onWarning: (): void => {}, repro: false as const }

/** Every key under `prefix`, in listing order. */
export async function keysOf(s: Storage, prefix?: string): Promise<string[]> {
  const out: string[] = []
  for await (const o of s.list(prefix)) out.push(o.key)
  return out
}
