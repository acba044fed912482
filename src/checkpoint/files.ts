import * as fs from 'node:fs/promises'
import path from 'node:path'
import { validateEntryPath } from '../format/manifest.js'
import type { PendingEntry } from './commit.js'

interface Found {
  rel: string
  abs: string
  size: number
  mode: number
}

/**
 * The regular files under `source` (or `source` itself) as pending entries that read from disk
 * when their chunks are cut. A file is opened at its first chunk and closed after its last, so
 * a save holds one descriptor per chunk in flight, never one per file.
 */
export async function fileEntries(source: string, warn: (m: string) => void): Promise<{ entries: PendingEntry[]; closeAll: () => Promise<void> }> {
  const root = path.resolve(source)
  const st = await fs.stat(root)
  const found: Found[] = []
  if (st.isFile()) found.push({ rel: path.basename(root), abs: root, size: st.size, mode: st.mode })
  else await walkDir(root, '', found, warn)
  const open = new Set<fs.FileHandle>()
  const entries = found.map((f): PendingEntry => {
    let fh: Promise<fs.FileHandle> | undefined
    return {
      path: validateEntryPath(f.rel),
      size: f.size,
      // Permission bits only: setuid, setgid and sticky bits are not checkpointed.
      mode: f.mode & 0o777,
      source: async (buf, offset) => {
        fh ??= fs.open(f.abs, 'r').then((h) => (open.add(h), h))
        const h = await fh
        const n = (await h.read(buf, 0, buf.byteLength, offset)).bytesRead
        if (offset + n >= f.size || n === 0) {
          fh = undefined
          open.delete(h)
          await h.close()
        }
        return n
      },
    }
  })
  return { entries, closeAll: async () => void (await Promise.all([...open].map((h) => h.close().catch(() => {})))) }
}

async function walkDir(root: string, rel: string, out: Found[], warn: (m: string) => void): Promise<void> {
  const dir = rel ? path.join(root, rel) : root
  const ents = await fs.readdir(dir, { withFileTypes: true })
  ents.sort((a, b) => (a.name < b.name ? -1 : 1))
  for (const e of ents) {
    const r = rel ? `${rel}/${e.name}` : e.name
    if (e.isDirectory()) await walkDir(root, r, out, warn)
    else if (e.isFile()) {
      const st = await fs.stat(path.join(root, r))
      out.push({ rel: r, abs: path.join(root, r), size: st.size, mode: st.mode })
    } else warn(`not saving ${path.join(root, r)}: only regular files and directories are checkpointed`)
  }
}
