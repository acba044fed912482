// The hostile campaign (issues 9 and 10): for a bounded time per backend, writers killed at random
// instants, maintenance beside them, random damage and proxy faults, and a fresh reader's check
// after every writer's end. Prints a per-backend summary and exits 1 when a bar is missed.
//
//   npm run test:campaign -- [--seconds 60] [--backends local,s3,gcs] [--seed N] [--json]
//                            [--read-deadline-ms 20000] [--kill-max-ms 1500]
//   --pauses: also freeze writers and the maintainer past the lock stale time (SIGSTOP, SIGCONT).
//   --sabotage: a self-test of the checker (it deletes resolved checkpoints behind its own back and
//   must then fail); never use it to judge the library.
//
// Every random choice comes from --seed (printed at the start), so a failing run can be replayed
// with the same choices; the instants at which processes die depend on the machine's speed, so a
// replay repeats the same kinds of events, not the exact interleaving.
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startTestServers, type TestServers } from '../helpers/servers.js'
import { runBackend, type BackendName } from './backend.js'
import { bars, type Tally } from './expect.js'

const here = path.dirname(fileURLToPath(import.meta.url))

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : undefined
}

function numberArg(name: string, dflt: number): number {
  const v = arg(name)
  if (v === undefined) return dflt
  if (!/^\d+$/.test(v)) {
    console.error(`--${name} takes a whole number, got "${v}"`)
    process.exit(2)
  }
  return Number(v)
}

const seconds = numberArg('seconds', 60)
const seed = numberArg('seed', Math.floor(Math.random() * 2 ** 31))
const json = process.argv.includes('--json')
const backends = (arg('backends') ?? 'local,s3,gcs').split(',').map((b) => b.trim()) as BackendName[]
for (const b of backends) {
  if (!['local', 's3', 'gcs'].includes(b)) {
    console.error(`--backends takes local, s3 and/or gcs, got "${b}"`)
    process.exit(2)
  }
}
const log = (line: string): void => void (json ? process.stderr : process.stdout).write(`${line}\n`)

log(
  `[campaign] seed ${seed}, ${seconds} s per backend: ${backends.join(', ')}   (replay: npm run test:campaign -- --seed ${seed} --seconds ${seconds} --backends ${backends.join(',')})`,
)

let servers: TestServers | undefined
const remote = backends.filter((b) => b !== 'local')
if (remote.length > 0) servers = await startTestServers(remote.length === 1 ? (remote[0] as 's3' | 'gcs') : undefined)

const tallies: Tally[] = []
try {
  for (const b of backends) {
    const t0 = performance.now()
    const t = await runBackend(b, {
      seconds,
      seed,
      readDeadlineMs: numberArg('read-deadline-ms', 20_000),
      killMaxMs: numberArg('kill-max-ms', 1500),
      distDir: here,
      cli: path.join(here, '..', '..', 'src', 'cli', 'main.js'),
      ...(b === 's3' ? { endpoint: servers!.s3! } : b === 'gcs' ? { endpoint: servers!.gcs! } : {}),
      log,
      sabotage: process.argv.includes('--sabotage'),
      pauses: process.argv.includes('--pauses'),
    })
    log(summary(t, (performance.now() - t0) / 1000))
    tallies.push(t)
  }
} finally {
  await servers?.stop()
}

function summary(t: Tally, took: number): string {
  const kinds = (r: Record<string, number>): string =>
    Object.entries(r)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ') || 'none'
  const lines = [
    `[campaign] ${t.backend}: ${took.toFixed(0)} s, seed ${seed}`,
    `  kills ${t.kills}${t.pauses ? ` (and ${t.pauses} freezes past the lock stale time)` : ''}, writers stopped by a failed write ${t.writerStops}, writers that could not start ${t.startFailures}, crashes ${t.crashes}`,
    `  damages ${t.damages} (${kinds(t.damageKinds)})`,
    `  faults injected ${t.faultsInjected} (${t.backend === 'local' ? 'no proxy on local disk' : kinds(t.faultKinds)})`,
    `  operations tried ${t.operations}, resolved writes ${t.resolvedWrites}, ambiguous async failures ${t.ambiguousFailures}`,
    `  maintenance beside the writers: ${kinds(t.maintenance)}`,
    `  reads through faults: ${t.readErrorsUnderFaults} typed errors, ${t.fallbacksUnderFaults} fallbacks (both allowed)`,
    `  untyped errors ${t.untypedErrors} (house rule: should be 0)`,
    ...bars(t).map((b) => `  ${b.name}: ${b.value}  (bar 0) ${b.value === 0 ? 'ok' : 'MISSED'}`),
    `    (wrong bytes ${t.wrongBytes}, newest resolved lost ${t.resolvedLost}, damaged not by us ${t.damagedByLibrary}; leftover temp files ${t.leftoverTempFiles}; unfinished multipart uploads ${t.unfinishedUploads ?? 'n/a'})`,
  ]
  return lines.join('\n')
}

const missed = tallies.filter((t) => bars(t).some((b) => b.value !== 0))
log('')
log('| backend | kills | damages | faults | operations | not read back exactly | hangs | committed-but-reported-failed | leftover temp bytes |')
log('|---|---|---|---|---|---|---|---|---|')
for (const t of tallies) {
  const [exact, hangs, cbrf, left] = bars(t).map((b) => b.value)
  log(`| ${t.backend} | ${t.kills} | ${t.damages} | ${t.faultsInjected} | ${t.operations} | ${exact} | ${hangs} | ${cbrf} | ${left} |`)
}
for (const t of tallies) if (t.findings.length) log(`\n[campaign] ${t.backend} findings:\n${t.findings.map((f) => `  - ${f}`).join('\n')}`)
log(missed.length ? `\n[campaign] FAILED (seed ${seed}): bars missed on ${missed.map((t) => t.backend).join(', ')}` : `\n[campaign] all bars met (seed ${seed})`)
if (json) process.stdout.write(`${JSON.stringify({ seed, tallies })}\n`)
process.exit(missed.length ? 1 : 0)
