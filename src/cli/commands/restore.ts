import { TaskpointError } from '../../errors.js'
import { UsageError, bytes, parse, type Command } from '../args.js'
import { openLocation, pick, requireCheckpoints } from '../open.js'
import { progress } from '../progress.js'

export const restore: Command = {
  help: `taskpoint restore URI [STEP|ID] DIR

Writes the files of a checkpoint (default: the newest intact one) under DIR, verifying every
chunk. Bytes checkpoints become DIR/data; state checkpoints one file per array.`,
  async run(argv) {
    const { positionals } = parse(argv, {})
    if (positionals.length < 2 || positionals.length > 3) throw new UsageError('expected URI [STEP] DIR')
    const dir = positionals.at(-1)!
    let bar: ReturnType<typeof progress> | undefined
    const { storage, cp } = await openLocation(positionals[0], {
      onProgress: (p) => {
        bar ??= progress('restore', p.total)
        bar.update(p.loaded)
      },
    })
    try {
      const list = await requireCheckpoints(storage, cp)
      const info = positionals.length === 3 ? pick(list, positionals[1]) : undefined
      const r = await cp.restore(dir, info ? { id: info.id } : {})
      bar?.finish()
      if (!r) throw new TaskpointError('NoCheckpoints', `no intact checkpoint at ${storage.uri}`)
      console.log(`restored step ${r.info.step} (${r.files.length} file(s), ${bytes(r.info.size)}) into ${dir}`)
      return 0
    } finally {
      await cp.close()
    }
  },
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
      await new Promise<void>((resolve, reject) => process.stdout.write(Buffer.from(data), (e) => (e ? reject(e) : resolve())))
      return 0
    } finally {
      await cp.close()
    }
  },
}
