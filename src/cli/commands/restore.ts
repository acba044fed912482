import { randomBytes } from 'node:crypto'
import { readdir, rename, rm } from 'node:fs/promises'
import path from 'node:path'
import { TaskpointError, type Checkpointer, type RestoreResult } from '../../index.js'
import { UsageError, bytes, parse, type Command } from '../args.js'
import { openLocation, pick, requireCheckpoints } from '../open.js'
import { progress } from '../progress.js'

export const restore: Command = {
  help: `taskpoint restore URI [STEP|ID] DIR [--clean | --force]

Writes the files of a checkpoint (default: the newest intact one) under DIR, verifying every
chunk; nothing is moved into place unless all of it verified. A files checkpoint (cp.save) comes
back as the tree it was saved from; a bytes checkpoint becomes DIR/data; a state checkpoint
DIR/state.bin (its arrays back to back; read them with cp.readState()).

DIR must be missing or empty: restoring into a directory that holds other files would mix them
with the checkpoint's, and a program reading DIR could not tell which is which.
  --clean   replace DIR's contents with the checkpoint's (restored and verified first, inside DIR,
            then the old contents are removed; DIR itself stays, so it may be a mount point)
  --force   write the checkpoint's files over DIR's, keeping any other files there`,
  async run(argv) {
    const { values, positionals } = parse(argv, { clean: { type: 'boolean' }, force: { type: 'boolean' } })
    if (positionals.length < 2 || positionals.length > 3) throw new UsageError('expected URI [STEP] DIR')
    if (values.clean && values.force) throw new UsageError('--clean and --force exclude each other')
    const dir = path.resolve(positionals.at(-1)!)
    const existing = await entriesOf(dir)
    if (existing.length > 0 && !values.clean && !values.force) {
      throw new TaskpointError(
        'RestoreConflict',
        `${dir} is not empty (${existing.length} entr${existing.length === 1 ? 'y' : 'ies'}, e.g. "${existing[0]}"): restoring would mix its files with the checkpoint's. Restore into an empty directory, or pass --clean (replace its contents) or --force (overwrite, keep the rest)`,
      )
    }
    let bar: ReturnType<typeof progress> | undefined
    const { storage, cp } = await openLocation(positionals[0], {
      onProgress: (p) => {
        bar ??= progress('restore', p.total)
        bar.update(p.loaded)
      },
    })
    try {
      cp.checkRestoreTarget(dir, { replacing: values.clean === true })
      const list = await requireCheckpoints(storage, cp)
      const info = positionals.length === 3 ? pick(list, positionals[1]) : undefined
      const opts = info ? { id: info.id } : {}
      const r = values.clean && existing.length > 0 ? await restoreClean(cp, dir, existing, opts) : await cp.restore(dir, opts)
      bar?.finish()
      if (!r) throw new TaskpointError('NoCheckpoints', `no intact checkpoint at ${storage.uri}`)
      console.log(`restored step ${r.info.step} (${r.files.length} file(s), ${bytes(r.info.size)}) into ${dir}`)
      return 0
    } finally {
      await cp.close()
    }
  },
}

/** DIR's entries; none when it does not exist. A file in DIR's place is refused. */
async function entriesOf(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort()
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return []
    if (code === 'ENOTDIR') throw new TaskpointError('RestoreConflict', `${dir} exists and is not a directory: restore into a directory`)
    throw e
  }
}

/**
 * --clean: restores into a stage directory inside DIR (same filesystem, so the moves below are
 * renames, and DIR may be a mount point), and only once that verified removes DIR's old entries
 * and moves the new ones up. A failed or damaged restore leaves DIR as it was.
 */
async function restoreClean(cp: Checkpointer, dir: string, old: string[], opts: { id?: string }): Promise<RestoreResult | undefined> {
  const stage = path.join(dir, `.tp-clean-${process.pid}-${randomBytes(4).toString('hex')}`)
  try {
    const r = await cp.restore(stage, opts)
    if (!r) return undefined
    for (const name of old) await rm(path.join(dir, name), { recursive: true, force: true })
    for (const name of await readdir(stage)) await rename(path.join(stage, name), path.join(dir, name))
    return r
  } finally {
    await rm(stage, { recursive: true, force: true })
  }
}

export const cat: Command = {
  help: `taskpoint cat URI [STEP|ID] [FILE]

Writes one file of a checkpoint to stdout, verified (default FILE: "data", the bytes of a bytes
checkpoint). With two arguments, the second is a STEP when it is a number, else a FILE.`,
  async run(argv) {
    const { positionals } = parse(argv, {})
    if (positionals.length < 1 || positionals.length > 3) throw new UsageError('expected URI [STEP] [FILE]')
    const { storage, cp } = await openLocation(positionals[0])
    try {
      const list = await requireCheckpoints(storage, cp)
      let which: string | undefined
      let file = 'data'
      if (positionals.length === 3) [which, file] = [positionals[1], positionals[2]!]
      else if (positionals.length === 2) {
        if (/^\d+$/.test(positionals[1]!)) which = positionals[1]
        else file = positionals[1]!
      }
      const info = pick(list, which)
      const got = await cp.load(info.id)
      const data = got?.files.get(file)
      if (!data) throw new TaskpointError('NoSuchFile', `checkpoint step ${info.step} has no file "${file}"; it has: ${[...(got?.files.keys() ?? [])].join(', ')}`)
      // A view, not Buffer.from(data): that would copy the whole file once more (peak memory 2x).
      const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
      await new Promise<void>((resolve, reject) => process.stdout.write(view, (e) => (e ? reject(e) : resolve())))
      return 0
    } finally {
      await cp.close()
    }
  },
}
