import { collectGarbage, prune as applyPolicy } from '../../admin.js'
import { anyOf, everyNSteps, latest, type RetentionPolicy } from '../../index.js'
import { CLI_EXIT, UsageError, bytes, durationFlag, intFlag, maxArgs, parse, type Command } from '../args.js'
import { openLocation, requireCheckpoints } from '../open.js'

export const prune: Command = {
  help: `taskpoint prune URI --keep-last N [--keep-every K] [--min-age 15m] [--dry-run] [--drop-damaged]

Deletes the checkpoints the policy does not keep (the newest always stays), then the chunks no
remaining checkpoint uses and that are older than --min-age (default 15m: a writer that is still
running may be uploading them). The newest checkpoint that verifies is always kept too. Damaged
checkpoints stay (and keep garbage collection from deleting anything) unless --drop-damaged.
--dry-run prints what would go.`,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      'keep-last': { type: 'string' },
      'keep-every': { type: 'string' },
      'min-age': { type: 'string' },
      'dry-run': { type: 'boolean' },
      'drop-damaged': { type: 'boolean' },
    })
    const dropDamaged = Boolean(values['drop-damaged'])
    const keepLast = intFlag(values['keep-last'] as string | undefined, 'keep-last', 1)
    const keepEvery = intFlag(values['keep-every'] as string | undefined, 'keep-every', 1)
    if (keepLast === undefined) throw new UsageError('--keep-last N is required (N >= 1)')
    const policies: RetentionPolicy[] = [latest(keepLast)]
    if (keepEvery !== undefined) policies.push(everyNSteps(keepEvery))
    const dryRun = Boolean(values['dry-run'])
    maxArgs(positionals, 1, 'URI')
    const minAgeMs = durationFlag(values['min-age'] as string | undefined, 'min-age', '15m')
    const { storage, cp } = await openLocation(positionals[0])
    try {
      await requireCheckpoints(storage, cp)
      const r = await applyPolicy(storage, anyOf(...policies), undefined, { dryRun, dropDamaged })
      for (const d of r.deleted) console.log(`${dryRun ? 'would delete' : 'deleted'}  step ${d.step}  ${d.id}`)
      for (const d of r.dropped) console.log(`${dryRun ? 'would drop' : 'dropped'}  damaged  ${d.id}: ${d.reason}`)
      if (!dropDamaged && r.skipped.some((x) => !x.vanished))
        console.log(`${r.skipped.length} damaged checkpoint(s) left in place (they block garbage collection); --drop-damaged deletes them`)
      console.log(`${dryRun ? 'would keep' : 'kept'} ${r.kept.length}, ${dryRun ? 'would delete' : 'deleted'} ${r.deleted.length} checkpoint(s)`)
      if (!dryRun) {
        const g = await collectGarbage(storage, { minAgeMs })
        if (g.skipped) console.log(`garbage: nothing deleted: ${g.skipped}`)
        else
          console.log(
            `garbage: deleted ${g.deletedChunks} chunk(s), freed ${bytes(g.freedBytes)}${g.youngUnreferenced ? `, left ${g.youngUnreferenced} recent unreferenced chunk(s)` : ''}`,
          )
      }
      return 0
    } finally {
      await cp.close()
    }
  },
}

export const gc: Command = {
  help: `taskpoint gc URI [--min-age 15m] [--dry-run]

Deletes chunks that no committed checkpoint references (left by crashed or pruned saves) and
that are older than --min-age (default 15m; use 0s only when no writer is running).`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'min-age': { type: 'string' }, 'dry-run': { type: 'boolean' } })
    const minAgeMs = durationFlag(values['min-age'] as string | undefined, 'min-age', '15m')
    maxArgs(positionals, 1, 'URI')
    const { storage, cp } = await openLocation(positionals[0])
    try {
      const dryRun = Boolean(values['dry-run'])
      const g = await collectGarbage(storage, { minAgeMs, dryRun })
      if (g.skipped) {
        console.log(`nothing deleted: ${g.skipped}`)
        for (const b of g.blockedBy) console.log(`  ${b}`)
        return g.blockedBy.length > 0 ? CLI_EXIT.corrupt : 0
      }
      console.log(
        `${dryRun ? 'would delete' : 'deleted'} ${g.deletedChunks} unreferenced chunk(s) (${bytes(g.freedBytes)}); ${g.referencedChunks} in use${g.youngUnreferenced ? `; ${g.youngUnreferenced} recent unreferenced left alone` : ''}${g.swept.count ? `; removed ${g.swept.count} leftover temporary file(s) (${bytes(g.swept.bytes)})` : ''}`,
      )
      return 0
    } finally {
      await cp.close()
    }
  },
}
