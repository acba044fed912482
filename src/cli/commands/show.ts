import { chunksOf, inspectCheckpoint } from '../../admin.js'
import { bytes, parse, type Command, maxArgs } from '../args.js'
import { openLocation, pick, requireCheckpoints } from '../open.js'

export const show: Command = {
  help: `taskpoint show URI [STEP|ID] [--json]

Shows one checkpoint's manifest in full (default: the newest): files with sizes and where their
bytes are (their own chunks, or a pack shared by small files), every chunk it references,
metadata, writer, attempt, and the reproducibility record (versions, git commit, entry hash).`,
  async run(argv) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' } })
    maxArgs(positionals, 2, 'URI [STEP|ID]')
    const { storage, cp } = await openLocation(positionals[0])
    try {
      const info = pick(await requireCheckpoints(storage, cp), positionals[1])
      const m = await inspectCheckpoint(storage, info.id)
      if (values.json) {
        console.log(JSON.stringify({ id: info.id, ...m }, null, 2))
        return 0
      }
      console.log(`checkpoint  ${info.id}`)
      console.log(`step        ${m.step}`)
      console.log(`kind        ${m.kind}`)
      console.log(`created     ${m.createdAt}`)
      console.log(`writer      ${m.writer} (epoch ${m.epoch}, seq ${m.seq}${m.attempt !== undefined ? `, attempt ${m.attempt}` : ''})`)
      console.log(`size        ${bytes(m.totalSize)} in ${m.files.length} file(s), chunks of ${bytes(m.chunkSize)}`)
      console.log(`metadata    ${JSON.stringify(m.metadata)}`)
      console.log(`repro       ${JSON.stringify(m.repro)}`)
      if (m.json !== undefined) console.log(`json        ${JSON.stringify(m.json).slice(0, 200)}`)
      if (m.arrays?.length) {
        console.log('arrays:')
        for (const a of m.arrays) console.log(`  ${a.name}  ${a.dtype}${a.shape ? ` [${a.shape.join('x')}]` : ''}  ${bytes(a.size)} at ${a.offset}`)
      }
      console.log('files:')
      for (const f of m.files) {
        const extra = [f.dtype, f.shape ? `[${f.shape.join('x')}]` : undefined, f.mode !== undefined ? `mode ${f.mode.toString(8)}` : undefined].filter(Boolean).join(' ')
        const where = f.packed ? `in pack ${f.packed.pack} at ${f.packed.offset}` : `${f.chunks.length} chunk(s)`
        console.log(`  ${f.path}  ${bytes(f.size)}  ${where}${extra ? `  ${extra}` : ''}`)
      }
      console.log('chunks:')
      for (const c of chunksOf(m)) console.log(`  ${c.hash}  ${bytes(c.size)}  ${c.paths.length === 1 ? c.paths[0] : `${c.paths.length} files`}`)
      return 0
    } finally {
      await cp.close()
    }
  },
}
