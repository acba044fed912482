// The baselines' durable write, shared by the benchmarks: what an application does without taskpoint.
import * as fs from 'node:fs/promises'
import path from 'node:path'

const GiB = 1024 * 1024 * 1024

/** `data` to `dir/name` durably: a temp file written and fsynced, renamed into place, the directory fsynced. */
export async function rawWrite(dir: string, name: string, data: Uint8Array): Promise<void> {
  const tmp = path.join(dir, `${name}.tmp`)
  const fh = await fs.open(tmp, 'w')
  try {
    // At most 1 GiB per write(2) call (Node refuses 2 GiB at once).
    for (let off = 0; off < data.byteLength; ) off += (await fh.write(data, off, Math.min(GiB, data.byteLength - off), off)).bytesWritten
    await fh.sync()
  } finally {
    await fh.close()
  }
  await fs.rename(tmp, path.join(dir, name))
  const d = await fs.open(dir, 'r')
  await d.sync()
  await d.close()
}
