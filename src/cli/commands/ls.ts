import { chunksOf, listCheckpoints } from '../../admin.js'
import { bytes, parse, type Command, maxArgs } from '../args.js'
import { openLocation, requireCheckpoints } from '../open.js'

export const ls: Command = {
  help: `taskpoint ls URI [--json]

Lists the committed checkpoints at URI, oldest first: step, time, size, bytes new in that
checkpoint vs shared with the one before (deduplicated chunks), and a metadata summary.
--json prints one array for scripts.`,
  async run(argv) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' } })
    maxArgs(positionals, 1, 'URI')
    const { storage, cp } = await openLocation(positionals[0])
    try {
      const { checkpoints: infos, manifests, skipped } = await listCheckpoints(storage)
      if (infos.length === 0) {
        if (values.json) console.log('[]')
        else await requireCheckpoints(storage, cp)
        return 0
      }
      let prev = new Set<string>()
      const rows = infos.map((i) => {
        const m = manifests.get(i.id)!
        const seen = new Set<string>()
        let fresh = 0
        for (const c of chunksOf(m)) {
          if (!prev.has(c.hash) && !seen.has(c.hash)) fresh += c.size
          seen.add(c.hash)
        }
        prev = seen
        return { ...i, newBytes: fresh, sharedBytes: i.size - fresh }
      })
      if (values.json) {
        console.log(JSON.stringify(rows, null, 2))
      } else {
        const lines = rows.map((r) => [
          String(r.step),
          r.createdAt.toISOString().replace('T', ' ').slice(0, 19),
          bytes(r.size),
          bytes(r.newBytes),
          r.kind,
          `${r.attempt ?? '-'}`,
          summarise(r.metadata),
        ])
        const head = ['STEP', 'TIME (UTC)', 'SIZE', 'NEW', 'KIND', 'ATTEMPT', 'METADATA']
        const w = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)))
        for (const l of [head, ...lines]) console.log(l.map((c, i) => (i === l.length - 1 ? c : c.padEnd(w[i]!))).join('  '))
      }
      for (const s of skipped) console.error(`warning: damaged checkpoint left out: ${s.id}`)
      return 0
    } finally {
      await cp.close()
    }
  },
}

function summarise(m: Record<string, unknown>): string {
  const s = Object.entries(m)
    .filter(([, v]) => v === null || ['string', 'number', 'boolean'].includes(typeof v))
    .map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? String(Number(v.toPrecision(4))) : String(v)}`)
    .join(' ')
  return s.length > 60 ? `${s.slice(0, 57)}...` : s
}
