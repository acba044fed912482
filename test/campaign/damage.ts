// Deliberate damage to stored objects, done straight to the store (never through the proxy) while
// no writer is alive. Each act is recorded with the steps of every checkpoint it touched, so the
// checker can tell damage we did from damage the library did.
import { CHUNK_DIR, MANIFEST_DIR, chunkHashFromKey, chunksOf, parseManifestKey, type Manifest } from '../../src/format/manifest.js'
import type { Storage } from '../../src/index.js'
import type { Rng } from './common.js'

export const DAMAGE_KINDS = {
  chunkFlip: 4,
  chunkTruncate: 3,
  chunkDelete: 3,
  chunkSwap: 2,
  manifestDelete: 2,
  manifestFlip: 2,
  manifestTruncate: 2,
  manifestSwap: 2,
} as const
export type DamageKind = keyof typeof DAMAGE_KINDS

export interface DamageRecord {
  kind: DamageKind
  keys: string[]
  /** Steps of the checkpoints whose manifest or chunks this touched: their loss is ours, not a bug. */
  steps: number[]
}

interface Index {
  manifests: { key: string; step: number }[]
  chunks: { key: string; size: number }[]
  /** chunk hash → steps of the manifests that reference it */
  users: Map<string, Set<number>>
}

async function index(storage: Storage): Promise<Index> {
  const manifests: Index['manifests'] = []
  const users = new Map<string, Set<number>>()
  for await (const o of storage.list(MANIFEST_DIR)) {
    const n = parseManifestKey(o.key)
    if (!n) continue
    manifests.push({ key: o.key, step: n.step })
    try {
      // Format 1 and 2: "TPM<n> <sha256>\n" then a JSON body. A body already damaged references nothing we can tell.
      const text = Buffer.from(await storage.get(o.key)).toString('utf8')
      // Unchecked (it may be damaged): chunksOf throws on a shape it cannot walk, which lands below.
      const body = JSON.parse(text.slice(text.indexOf('\n') + 1)) as Manifest
      for (const c of chunksOf(body)) if (c.hash) (users.get(c.hash) ?? users.set(c.hash, new Set()).get(c.hash)!).add(n.step)
    } catch {
      // unreadable: it is damaged already (and was recorded when we did it)
    }
  }
  const chunks: Index['chunks'] = []
  for await (const o of storage.list(CHUNK_DIR)) if (chunkHashFromKey(o.key)) chunks.push({ key: o.key, size: o.size })
  return { manifests, chunks, users }
}

const flip = (b: Uint8Array, rng: Rng): Uint8Array => {
  const out = new Uint8Array(b)
  out[rng.int(0, out.length - 1)]! ^= 1 << rng.int(0, 7)
  return out
}

/** Does one act of damage of `kind` to a random object; undefined when there was nothing to damage. */
export async function damage(storage: Storage, rng: Rng, kind: DamageKind): Promise<DamageRecord | undefined> {
  const ix = await index(storage)
  const usersOf = (chunkKey: string): number[] => [...(ix.users.get(chunkHashFromKey(chunkKey) ?? '') ?? [])]
  const stepOf = (manifestKey: string): number[] => [parseManifestKey(manifestKey)!.step]
  const nonEmpty = ix.chunks.filter((c) => c.size > 0)
  switch (kind) {
    case 'chunkFlip':
    case 'chunkTruncate': {
      if (nonEmpty.length === 0) return undefined
      const c = rng.pick(nonEmpty)
      const b = await storage.get(c.key)
      await storage.put(c.key, kind === 'chunkFlip' ? flip(b, rng) : b.subarray(0, rng.int(0, b.length - 1)))
      return { kind, keys: [c.key], steps: usersOf(c.key) }
    }
    case 'chunkDelete': {
      if (ix.chunks.length === 0) return undefined
      const c = rng.pick(ix.chunks)
      await storage.delete(c.key)
      return { kind, keys: [c.key], steps: usersOf(c.key) }
    }
    case 'chunkSwap': {
      if (ix.chunks.length < 2) return undefined
      const a = rng.pick(ix.chunks)
      const b = rng.pick(ix.chunks.filter((c) => c.key !== a.key))
      const [ba, bb] = [await storage.get(a.key), await storage.get(b.key)]
      await storage.put(a.key, bb)
      await storage.put(b.key, ba)
      return { kind, keys: [a.key, b.key], steps: [...usersOf(a.key), ...usersOf(b.key)] }
    }
    case 'manifestDelete': {
      if (ix.manifests.length === 0) return undefined
      const m = rng.pick(ix.manifests)
      await storage.delete(m.key)
      return { kind, keys: [m.key], steps: stepOf(m.key) }
    }
    case 'manifestFlip':
    case 'manifestTruncate': {
      if (ix.manifests.length === 0) return undefined
      const m = rng.pick(ix.manifests)
      const b = await storage.get(m.key)
      await storage.put(m.key, kind === 'manifestFlip' ? flip(b, rng) : b.subarray(0, rng.int(0, b.length - 1)))
      return { kind, keys: [m.key], steps: stepOf(m.key) }
    }
    case 'manifestSwap': {
      // A valid body under another checkpoint's name: must read as damage, never as that checkpoint.
      if (ix.manifests.length < 2) return undefined
      const a = rng.pick(ix.manifests)
      const b = rng.pick(ix.manifests.filter((m) => m.key !== a.key))
      const [ba, bb] = [await storage.get(a.key), await storage.get(b.key)]
      await storage.put(a.key, bb)
      await storage.put(b.key, ba)
      return { kind, keys: [a.key, b.key], steps: [a.step, b.step] }
    }
  }
}
