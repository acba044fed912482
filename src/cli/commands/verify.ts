import { verifyCheckpoints } from '../../admin.js'
import { CLI_EXIT, parse, type Command, maxArgs } from '../args.js'
import { openLocation, pick, requireCheckpoints } from '../open.js'
import { progress } from '../progress.js'
export const verify: Command = {
  help: `taskpoint verify URI [STEP|ID | --all]

Re-reads and re-hashes every chunk of a checkpoint (default: the newest; --all: every one,
including those whose manifest is damaged) and reports each corrupt or missing piece.
Exit 0 when all is intact, 3 when anything is damaged.`,
  async run(argv) {
    const { values, positionals } = parse(argv, { all: { type: 'boolean' } })
    maxArgs(positionals, 2, 'URI [STEP|ID]')
    const { storage, cp } = await openLocation(positionals[0])
    try {
      // A step or id names an intact checkpoint from the list; otherwise the newest name is checked,
      // damaged or not, so a damaged newest checkpoint is reported instead of passed over.
      const opts = positionals[1] !== undefined ? { ids: [pick(await requireCheckpoints(storage, cp), positionals[1]).id] } : { all: Boolean(values.all) }
      let bar: ReturnType<typeof progress> | undefined
      let done = 0
      const reports = await verifyCheckpoints(storage, {
        ...opts,
        onStart: (_id, m) => {
          bar?.finish()
          done = 0
          bar = progress(`verify step ${m.step}`, m.totalSize)
        },
        onBytes: (_id, n) => bar?.update((done += n)),
      })
      bar?.finish()
      if (reports.length === 0) await requireCheckpoints(storage, cp)
      let damaged = 0
      for (const r of reports) {
        if (r.problems.length) {
          damaged++
          if (r.step === undefined) console.log(`DAMAGED  ${r.id}: ${r.problems.join('; ')}`)
          else {
            console.log(`DAMAGED  ${r.id} (step ${r.step}): ${r.problems.length} bad chunk reference(s)`)
            for (const p of r.problems) console.log(`  ${p}`)
          }
        } else {
          console.log(`ok       ${r.id} (step ${r.step}, ${r.chunks} chunks)`)
        }
      }
      console.log(damaged ? `${damaged} of ${reports.length} checkpoint(s) damaged` : `${reports.length} checkpoint(s) intact`)
      return damaged ? CLI_EXIT.corrupt : CLI_EXIT.ok
    } finally {
      await cp.close()
    }
  },
}
