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

export async function walk(dir: string, dirKey: string, prefix: string, out: ObjectInfo[], startAfter?: string): Promise<void> {
  let entries: import('node:fs').Dirent[]
  try {
    entries = await fs.readdir(dir, { withFileTypes: true })
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return
    throw e
  }
  for (const ent of entries) {
    if (ent.name.includes(TEMP_MARK)) continue
    const key = dirKey ? `${dirKey}/${ent.name}` : ent.name
    if (ent.isDirectory()) {
      // Descend only where keys below could still match the prefix and sort after startAfter:
      // every key below starts with `${key}/`, so when that sorts before startAfter and is not
      // a prefix of it, all of them do (a listing from a recent key skips older directories unread).
      const below = `${key}/`
      const matches = prefix.startsWith(below) || below.startsWith(prefix)
      const allBefore = startAfter !== undefined && below < startAfter && !startAfter.startsWith(below)
      if (matches && !allBefore) await walk(path.join(dir, ent.name), key, prefix, out, startAfter)
    } else if (ent.isFile() && key.startsWith(prefix) && (startAfter === undefined || key > startAfter)) {
      // Filtered before the stat: a listing after a recent key costs one readdir, not a stat per file.
      const st = await fs.stat(path.join(dir, ent.name)).catch(() => undefined)
      if (st) out.push({ key, size: st.size, etag: tagOf(st), lastModified: st.mtime })
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
