// Pieces shared by the campaign's processes (runner, writer, maintainer): the seeded generator,
// the deterministic payloads, the one content hash every party agrees on, and how a child opens
// the store it is told about.
import { createHash } from 'node:crypto'
import { TaskpointError, openStorage, type OpenStorageOptions, type Storage } from '../../src/index.js'
import type { LockOptions } from '../../src/index.js'

/** What a child process is handed (as one JSON argument). */
export interface ChildConfig {
  uri: string
  /** Seed of this child's own generator (derived from the run's seed, so a run can be replayed). */
  seed: number
  /** Seed of the payload contents (the same for the whole backend run). */
  payloadSeed: number
  /** Steps of this writer are stepBase + n, n = 1, 2, ...: unique per attempt across the run. */
  stepBase: number
  /** A directory of the writer's own: where it builds the trees it saves. */
  workDir: string
  /** Where the writer restores the newest checkpoint at start (shared by all writers, like a job's work dir). */
  restoreDir: string
  retry: { retries: number; minTimeoutMs: number; maxTimeoutMs: number }
  requestTimeoutMs: number
  locks: LockOptions
  /** Whether the store (or the proxy in front of it) enforces conditional creates. */
  conditionalCreate: boolean
  /** The CLI binary (for the maintainer's `taskpoint gc`). */
  cli: string
  /** The CLI gets no lock options: it is killed after this long if still waiting. */
  cliTimeoutMs: number
}

export const CHUNK_SIZE = 16 * 1024

/** A small, fast, seedable generator (mulberry32): the same seed gives the same choices. */
export class Rng {
  private s: number
  constructor(seed: number) {
    this.s = seed >>> 0
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1))
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!
  }
  /** Picks a key of `weights` with probability proportional to its weight. */
  weighted<K extends string>(weights: Record<K, number>): K {
    const entries = Object.entries(weights) as [K, number][]
    let r = this.next() * entries.reduce((s, [, w]) => s + w, 0)
    for (const [k, w] of entries) {
      if ((r -= w) < 0) return k
    }
    return entries.at(-1)![0]
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i += 4) {
      const v = Math.floor(this.next() * 4294967296)
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 255
    }
    return out
  }
}

/** Mixes numbers into a 32-bit seed (FNV-1a over their decimal text). */
export function mix(...parts: (number | string)[]): number {
  let h = 0x811c9dc5
  for (const c of parts.join('/')) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0
  return h
}

/**
 * The bytes of one step: a prefix shared by every step of the run (so checkpoints share chunks and
 * damage to one chunk touches many), then whole chunks drawn from a small pool (so a chunk that
 * retention left unreferenced is soon uploaded again by a later step, while a collector may be
 * deciding to delete it), then a tail of its own whose length varies, sometimes zero.
 */
export function payload(payloadSeed: number, step: number): Uint8Array {
  const shared = new Rng(payloadSeed).bytes(3 * CHUNK_SIZE)
  const r = new Rng(mix(payloadSeed, step))
  const blocks = Array.from({ length: r.int(0, 3) }, () => new Rng(mix(payloadSeed, 'pool', r.int(0, 5))).bytes(CHUNK_SIZE))
  const tail = r.next() < 0.2 ? 0 : r.int(1, CHUNK_SIZE + 77)
  const out = new Uint8Array(shared.length + blocks.length * CHUNK_SIZE + tail)
  out.set(shared)
  blocks.forEach((b, i) => out.set(b, shared.length + i * CHUNK_SIZE))
  out.set(r.bytes(tail), shared.length + blocks.length * CHUNK_SIZE)
  return out
}

/** The files of a directory save for one step: relative path → bytes (some shared, one nested, one empty at times). */
export function treeFiles(payloadSeed: number, step: number): Map<string, Uint8Array> {
  const r = new Rng(mix(payloadSeed, step, 'tree'))
  const files = new Map<string, Uint8Array>()
  files.set('weights.bin', payload(payloadSeed, step))
  files.set('config.json', new TextEncoder().encode(JSON.stringify({ step, lr: 0.001 })))
  if (r.next() < 0.7) files.set('opt/state.bin', r.bytes(r.int(0, 2 * CHUNK_SIZE)))
  if (r.next() < 0.3) files.set('opt/deep/empty', new Uint8Array(0))
  return files
}

/**
 * The content hash every party uses: sha256 over the files sorted by path, each as path, size and
 * bytes. A bytes checkpoint is the single file `data`.
 */
export function contentHash(files: Map<string, Uint8Array> | Iterable<[string, Uint8Array]>): string {
  const h = createHash('sha256')
  for (const [p, b] of [...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    h.update(`${p}\0${b.byteLength}\0`)
    h.update(b)
  }
  return h.digest('hex')
}

export function bytesHash(b: Uint8Array): string {
  return contentHash([['data', b]])
}

/** Opens the child's store with the campaign's retry policy and deadlines (endpoints come from the environment). */
export async function openChildStorage(c: ChildConfig): Promise<Storage> {
  const o: OpenStorageOptions = {
    retry: c.retry,
    s3: { retry: c.retry, requestTimeoutMs: c.requestTimeoutMs, conditionalCreate: c.conditionalCreate },
    gcs: { retry: c.retry, requestTimeoutMs: c.requestTimeoutMs, conditionalCreate: c.conditionalCreate },
  }
  return openStorage(c.uri, o)
}

/** One line on stdout, the protocol between a child and the runner: words separated by spaces. */
export function say(...words: (string | number)[]): void {
  process.stdout.write(`${words.map((w) => String(w).replace(/\s+/g, '_')).join(' ')}\n`)
}

/** An error's stable code, or `untyped:<name>` for anything that is not a TaskpointError (a defect). */
export function codeOf(e: unknown): string {
  if (e instanceof TaskpointError) return e.code
  return `untyped:${(e as Error)?.name ?? typeof e}`
}
