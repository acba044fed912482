// Small things every suite needs.
import { blake3 } from '@napi-rs/blake-hash'
import { createHash } from 'node:crypto'
import { readdirSync } from 'node:fs'
import path from 'node:path'
import { expect } from 'vitest'
import { StorageError, type Storage } from '../../src/index.js'
import { TEMP_MARK } from '../../src/storage/keys.js'
import { startInTurn } from '../../src/worker-starts.js'

export const KiB = 1024
export const MiB = 1024 * 1024

export const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/**
 * The id taskpoint stores a chunk under, computed here independently of src/ (BLAKE3 through the
 * native module directly), so a test that compares it with what was stored checks the code.
 */
export const chunkIdOf = (b: Uint8Array): string => `b3-${Buffer.from(blake3(Buffer.from(b.buffer, b.byteOffset, b.byteLength))).toString('hex')}`

/** The object key of a chunk id (format: `chunks/<first 2 hex of the digest>/<id>`). */
export const chunkKeyOf = (id: string): string => `chunks/${id.replace(/^b3-/, '').slice(0, 2)}/${id}`

/** Checkpointer options that keep a test's output clean. */
export const quiet = { onWarning: (): void => {}, repro: false as const }

/** Every key under `prefix`, in listing order. */
export async function keysOf(s: Storage, prefix?: string): Promise<string[]> {
  const out: string[] = []
  for await (const o of s.list(prefix)) out.push(o.key)
  return out
}

/**
 * A store on which a "collector" takes the writer for dead while its first manifest goes out:
 * after that put it removes every lock and chunk and the manifest `dropped` (as if retention had
 * pruned it), then runs `meanwhile` (a file changing on disk, say). `struck()` tells whether it ran.
 */
export function collectorStrikesDuringManifest(s: Storage, dropped: string, meanwhile: () => void | Promise<void>): { storage: Storage; struck: () => boolean } {
  const storage = Object.create(s) as Storage
  let struck = false
  storage.put = async (key, body, o) => {
    const out = await s.put(key, body, o)
    if (key.startsWith('manifests/') && !struck) {
      struck = true
      for (const k of await keysOf(s, 'locks/')) await s.delete(k)
      for (const k of await keysOf(s, 'chunks/')) await s.delete(k)
      await s.delete(dropped)
      await meanwhile()
    }
    return out
  }
  return { storage, struck: () => struck }
}

/** Temp files (TEMP_MARK in the name) anywhere under `root`: what a put must never leave behind. */
export function tempFiles(root: string): string[] {
  const out: string[] = []
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name))
      else if (e.name.includes(TEMP_MARK)) out.push(path.join(d, e.name))
    }
  }
  walk(root)
  return out
}

/** The StorageError `p` rejects with (fails the test if it resolves or rejects with anything else). */
export async function failure(p: Promise<unknown>): Promise<StorageError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  )
  expect(e).toBeInstanceOf(StorageError)
  return e as StorageError
}

/** Resolves once every thread start queued so far (src/worker-starts.ts) has been made. */
export const queuedThreadStarts = (): Promise<void> =>
  new Promise((resolve) =>
    startInTurn(() => {
      resolve()
      return undefined
    }),
  )
