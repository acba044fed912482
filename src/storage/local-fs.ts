import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import { TEMP_MARK } from './keys.js'
import type { Body, ObjectInfo, PutOptions, SweepResult, TransferProgress } from './types.js'

// The file-system steps of the local driver, each a plain function of its inputs.

/** An etag for a file: inode, size and mtime, so a replaced or rewritten file gets a new tag. */
export function tagOf(st: { size: number; mtimeMs: number; ino: number }): string {
  return `${st.ino.toString(16)}-${st.size.toString(16)}-${Math.floor(st.mtimeMs * 1000).toString(16)}`
}

export async function writeBody(fh: fs.FileHandle, body: Body, key: string, options: PutOptions): Promise<number> {
  const report = (loaded: number, total?: number): void => {
    const p: TransferProgress = { key, loaded }
    if (total !== undefined) p.total = total
    options.onProgress?.(p)
  }
  if (body instanceof Uint8Array) {
    let off = 0
    while (off < body.byteLength) {
      const { bytesWritten } = await fh.write(body, off, body.byteLength - off)
      off += bytesWritten
    }
    report(off, body.byteLength)
    return off
  }
  let total = 0
  for await (const piece of body.open() as AsyncIterable<Uint8Array>) {
    options.signal?.throwIfAborted()
    let off = 0
    while (off < piece.byteLength) {
      const { bytesWritten } = await fh.write(piece, off, piece.byteLength - off)
      off += bytesWritten
    }
    total += piece.byteLength
    report(total, body.size)
  }
  if (total === 0) report(0, body.size)
  return total
}

/** fsyncs a directory (a FileHandle: Node's permission model refuses fs.fsync on a plain descriptor). */
export async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** A file a listing found: what ObjectInfo is made of (see listed()). */
export interface ListedFile {
  key: string
  size: number
  ino: number
  mtimeMs: number
}

export function listed(f: ListedFile): ObjectInfo {
  return { key: f.key, size: f.size, etag: tagOf(f), lastModified: mtimeOf(f.mtimeMs) }
}

/** A file's mtime as fs.Stats gives it (`mtime` rounds `mtimeMs` to the millisecond; a plain Date would truncate it). */
export function mtimeOf(mtimeMs: number): Date {
  return new Date(Math.round(mtimeMs))
}

/**
 * Which entries of a directory a listing of `prefix` after `startAfter` visits: 'descend' into a
 * directory, 'stat' a file, or skip. Self-contained (no imports, no closures): the file thread runs
 * this very function (see local-put-thread.ts), so both paths list by one rule.
 */
export function listStep(
  name: string,
  key: string,
  isDirectory: boolean,
  isFile: boolean,
  prefix: string,
  startAfter: string | undefined,
  tempMark: string,
): 'descend' | 'stat' | undefined {
  if (name.includes(tempMark)) return undefined
  if (isDirectory) {
    // Descend only where keys below could still match the prefix and sort after startAfter:
    // every key below starts with `${key}/`, so when that sorts before startAfter and is not
    // a prefix of it, all of them do (a listing from a recent key skips older directories unread).
    const below = `${key}/`
    const matches = prefix.startsWith(below) || below.startsWith(prefix)
    const allBefore = startAfter !== undefined && below < startAfter && !startAfter.startsWith(below)
    return matches && !allBefore ? 'descend' : undefined
  }
  // Filtered before the stat: a listing after a recent key costs one readdir, not a stat per file.
  return isFile && key.startsWith(prefix) && (startAfter === undefined || key > startAfter) ? 'stat' : undefined
}

/** The calling thread's listing (the file thread runs the same steps with synchronous calls). */
export async function walk(dir: string, dirKey: string, prefix: string, out: ListedFile[], startAfter?: string): Promise<void> {
  let entries: import('node:fs').Dirent[]
  try {
    entries = await fs.readdir(dir, { withFileTypes: true })
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return
    throw e
  }
  for (const ent of entries) {
    const key = dirKey ? `${dirKey}/${ent.name}` : ent.name
    const step = listStep(ent.name, key, ent.isDirectory(), ent.isFile(), prefix, startAfter, TEMP_MARK)
    if (step === 'descend') await walk(path.join(dir, ent.name), key, prefix, out, startAfter)
    else if (step === 'stat') {
      const st = await fs.stat(path.join(dir, ent.name)).catch(() => undefined)
      if (st) out.push({ key, size: st.size, ino: st.ino, mtimeMs: st.mtimeMs })
    }
  }
}

/** Removes every file under `root` whose name carries TEMP_MARK and that was last written more than `olderThanMs` ago. */
export async function sweepTempFiles(root: string, olderThanMs: number): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, bytes: 0, items: [] }
  const visit = async (dir: string, rel: string): Promise<void> => {
    let entries: import('node:fs').Dirent[]
    try {
      entries = await fs.readdir(dir, { withFileTypes: true })
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return
      throw e
    }
    for (const ent of entries) {
      const full = path.join(dir, ent.name)
      const key = rel ? `${rel}/${ent.name}` : ent.name
      if (ent.isDirectory()) await visit(full, key)
      else if (ent.name.includes(TEMP_MARK)) {
        const st = await fs.stat(full).catch(() => undefined)
        if (!st || Date.now() - st.mtimeMs < olderThanMs) continue
        try {
          await fs.unlink(full)
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue // renamed into place or removed meanwhile
          throw e
        }
        result.removed++
        result.bytes += st.size
        result.items.push(key)
      }
    }
  }
  await visit(root, '')
  return result
}
