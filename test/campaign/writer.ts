// A campaign writer, meant to be SIGKILLed at any instant. It resumes like a real job (restores or
// reads the newest checkpoint), then commits forever, mixing sync writes, writeAsync + flush and
// directory saves, with retention and an aggressive GC. It reports on stdout, one line each:
//   start | startfail <code> | restored <step> <hash> | loaded <step> <hash> | resumed-none
//   attempt <step> <kind> <hash>     before a write starts (every step is used once in the run)
//   ok <step>                        the write of <step> resolved
//   fail <step> <code>               the write of <step> rejected (and only that write could have)
//   afail <steps,...> <code>         a flush rejected after several writeAsync calls (ambiguous)
//   warn <message>
// After a failure it exits with code 3, so the runner checks the store before anything else
// (its own retention included) can hide a checkpoint that was reported failed but committed.
import * as fs from 'node:fs/promises'
import path from 'node:path'
import { Checkpointer, latest } from '../../src/index.js'
import { CHUNK_SIZE, Rng, bytesHash, codeOf, contentHash, openChildStorage, payload, say, treeFiles, type ChildConfig } from './common.js'

const c = JSON.parse(process.argv[2]!) as ChildConfig
const rng = new Rng(c.seed)

/** Opens and resumes; a failure here (the store unreachable after all retries) ends the writer with exit 4. */
async function start(): Promise<Checkpointer> {
  const storage = await openChildStorage(c)
  const cp = await Checkpointer.open(storage, {
    chunkSize: CHUNK_SIZE,
    keep: latest(3),
    gc: { minAgeMs: 0 },
    locks: c.locks,
    repro: false,
    onWarning: (m) => say('warn', m),
  })
  say('start')
  // Resume the way a job does: restore into its working directory, or read the bytes.
  const how = rng.next()
  if (how < 0.4) {
    const r = await cp.restore(c.restoreDir)
    if (r) {
      const files = new Map<string, Uint8Array>()
      for (const f of r.files) files.set(f, new Uint8Array(await fs.readFile(path.join(c.restoreDir, f))))
      say('restored', r.info.step, contentHash(files))
    } else say('resumed-none')
  } else if (how < 0.8) {
    const got = await cp.load()
    if (got) say('loaded', got.info.step, contentHash(got.files))
    else say('resumed-none')
  }
  return cp
}

let cp: Checkpointer
try {
  cp = await start()
} catch (e) {
  say('startfail', codeOf(e), (e as Error).message)
  process.exit(4)
}

let n = 0
const next = (): number => c.stepBase + ++n

for (;;) {
  const kind = rng.weighted({ sync: 4, async: 4, save: 2 })
  if (kind === 'sync') {
    const step = next()
    const data = payload(c.payloadSeed, step)
    say('attempt', step, 'sync', bytesHash(data))
    try {
      await cp.write(data, { step, metadata: { campaign: true } })
    } catch (e) {
      say('fail', step, codeOf(e), (e as Error).message)
      process.exit(3)
    }
    say('ok', step)
  } else if (kind === 'async') {
    // Several snapshots, then one flush: only the last is sure to be committed (latest wins).
    const steps: number[] = []
    const k = rng.int(1, 3)
    try {
      for (let i = 0; i < k; i++) {
        const step = next()
        const data = payload(c.payloadSeed, step)
        say('attempt', step, 'async', bytesHash(data))
        steps.push(step)
        cp.writeAsync(data, { step, metadata: { campaign: true } })
      }
      await cp.flush()
    } catch (e) {
      if (steps.length === 1) say('fail', steps[0]!, codeOf(e), (e as Error).message)
      else say('afail', steps.join(','), codeOf(e), (e as Error).message)
      process.exit(3)
    }
    say('ok', steps.at(-1)!)
  } else {
    const step = next()
    const files = treeFiles(c.payloadSeed, step)
    const dir = path.join(c.workDir, `tree-${step}`)
    for (const [p, b] of files) {
      await fs.mkdir(path.dirname(path.join(dir, p)), { recursive: true })
      await fs.writeFile(path.join(dir, p), b)
    }
    say('attempt', step, 'save', contentHash(files))
    try {
      await cp.save(dir, { step, metadata: { campaign: true } })
    } catch (e) {
      say('fail', step, codeOf(e), (e as Error).message)
      process.exit(3)
    }
    say('ok', step)
    await fs.rm(dir, { recursive: true, force: true })
  }
}
