import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import path from 'node:path'
import pLimit from 'p-limit'
import { TaskpointError } from '../errors.js'
import { CorruptCheckpointError, validateEntryPath, type Manifest } from '../format/manifest.js'
import type { Storage } from '../storage/types.js'
import { sharedBytes } from './hash.js'
import type { ChunkCache } from './chunk-cache.js'
import { fetchChunk, type ChunkWitness } from './reader.js'

/**
 * Temporary files of a restore: short names (a long file name plus a suffix could pass NAME_MAX)
 * that carry the restoring process's pid, so the next restore can tell a dead process's leftovers
 * from a live one's.
 */
const TEMP_PREFIX = '.tp-restore-'
const TEMP_RE = /^\.tp-restore-(\d+)-[0-9a-f]{8}$/

export interface RestoreOptions {
  /** Files restored at once (each holds one descriptor and one chunk buffer). Default 8. */
  concurrency: number
  witness?: ChunkWitness
  /** Local copies of chunks to read before the store (see ChunkCache). */
  cache?: ChunkCache
  onBytes?: (n: number) => void
}

interface Staged {
  tmp: string
  final: string
  mode: number | undefined
}

/**
 * Writes every file of a manifest under `root`, verified chunk by chunk. Everything is written to
 * temporary files first and moved into place only once all of it verified, so a damaged checkpoint
 * leaves the directory as it was and the caller can fall back to an older one. Descriptors and
 * memory stay bounded by `concurrency` whatever the number of files.
 */
export async function restoreFiles(storage: Storage, key: string, m: Manifest, root: string, o: RestoreOptions): Promise<string[]> {
  const targets = m.files.map((f) => {
    const final = path.join(root, ...validateEntryPath(f.path).split('/'))
    if (!final.startsWith(root + path.sep)) throw new CorruptCheckpointError(key, `file ${f.path} would land outside ${root}`)
    return { f, final }
  })
  const dirs = [...new Set(targets.map((t) => path.dirname(t.final)))]
  for (const d of dirs) await makeDir(d, root)
  await sweepDeadTemps(dirs)
  const staged: Staged[] = []
  // One chunk buffer per file in flight, made once and reused: memory is concurrency x chunk.
  let bufSize = 1
  for (const f of m.files) for (const c of f.chunks) bufSize = Math.max(bufSize, c.size)
  const free: Uint8Array[] = []
  const limit = pLimit(o.concurrency)
  try {
    await Promise.all(
      targets.map(({ f, final }) =>
        limit(async () => {
          const tmp = path.join(path.dirname(final), `${TEMP_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`)
          staged.push({ tmp, final, mode: f.mode })
          const fh = await fs.open(tmp, 'wx', 0o600)
          try {
            let at = 0
            for (const c of f.chunks) {
              const buf = free.pop() ?? sharedBytes(bufSize + 1)
              try {
                const bytes = await fetchChunk(storage, key, c.hash, c.size, buf, o.witness, o.cache)
                let w = 0
                while (w < bytes.byteLength) w += (await fh.write(bytes, w, bytes.byteLength - w, at + w)).bytesWritten
              } finally {
                free.push(buf)
              }
              at += c.size
              o.onBytes?.(c.size)
            }
            await fh.truncate(f.size)
          } finally {
            await fh.close()
          }
        }),
      ),
    )
    for (const s of staged) await place(s)
  } catch (e) {
    await Promise.all(staged.map((s) => fs.rm(s.tmp, { force: true })))
    throw e
  }
  return m.files.map((f) => f.path)
}

async function makeDir(dir: string, root: string): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true })
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      throw new TaskpointError(
        'RestoreConflict',
        `cannot restore into ${dir}: ${path.relative(root, dir) || dir} or one of its parents exists and is not a directory; move it away or restore elsewhere`,
      )
    }
    throw e
  }
}

async function place(s: Staged): Promise<void> {
  try {
    await fs.rename(s.tmp, s.final)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST') {
      throw new TaskpointError('RestoreConflict', `cannot restore ${s.final}: a directory is in the way; move it away or restore elsewhere`)
    }
    throw e
  }
  // Permission bits only: setuid, setgid and sticky bits from a checkpoint are never restored.
  await fs.chmod(s.final, (s.mode ?? 0o644) & 0o777)
}

/** Removes temporary files that killed restores left in these directories. */
async function sweepDeadTemps(dirs: string[]): Promise<void> {
  for (const d of dirs) {
    let names: string[]
    try {
      names = await fs.readdir(d)
    } catch {
      continue
    }
    for (const n of names) {
      const m = TEMP_RE.exec(n)
      if (m && !alive(Number(m[1]))) await fs.rm(path.join(d, n), { force: true })
    }
  }
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}
