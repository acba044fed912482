import pLimit from 'p-limit'
import { fetchChunk } from '../../checkpoint/reader.js'
import { CorruptCheckpointError, MANIFEST_DIR, decodeManifest, parseManifestKey, type Manifest } from '../../format/manifest.js'
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
      const ids: string[] = []
      if (values.all) {
        for await (const o of storage.list(MANIFEST_DIR)) if (parseManifestKey(o.key)) ids.push(o.key)
        if (ids.length === 0) await requireCheckpoints(storage, cp)
      } else {
        ids.push(pick(await requireCheckpoints(storage, cp), positionals[1]).id)
      }
      const checked = new Map<string, string | null>() // chunk hash → problem (null when fine)
      const limit = pLimit(8)
      let damaged = 0
      for (const id of ids) {
        let m: Manifest
        try {
          m = decodeManifest(id, await storage.get(id))
        } catch (e) {
          if (!(e instanceof CorruptCheckpointError)) throw e
          console.log(`DAMAGED  ${id}: ${e.reason}`)
          damaged++
          continue
        }
        const bar = progress(`verify step ${m.step}`, m.totalSize)
        let done = 0
        const problems: string[] = []
        await Promise.all(
          m.files.flatMap((f) =>
            f.chunks.map((c) =>
              limit(async () => {
                if (!checked.has(c.hash)) {
                  try {
                    await fetchChunk(storage, id, c.hash, c.size)
                    checked.set(c.hash, null)
                  } catch (e) {
                    if (!(e instanceof CorruptCheckpointError)) throw e
                    checked.set(c.hash, e.reason)
                  }
                }
                const p = checked.get(c.hash)
                if (p) problems.push(`${f.path}: ${p}`)
                done += c.size
                bar.update(done)
              }),
            ),
          ),
        )
        bar.finish()
        if (problems.length) {
          damaged++
          console.log(`DAMAGED  ${id} (step ${m.step}): ${problems.length} bad chunk reference(s)`)
          for (const p of problems) console.log(`  ${p}`)
        } else {
          console.log(`ok       ${id} (step ${m.step}, ${m.files.reduce((s, f) => s + f.chunks.length, 0)} chunks)`)
        }
      }
      console.log(damaged ? `${damaged} of ${ids.length} checkpoint(s) damaged` : `${ids.length} checkpoint(s) intact`)
      return damaged ? CLI_EXIT.corrupt : CLI_EXIT.ok
    } finally {
      await cp.close()
    }
  },
}
