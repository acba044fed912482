// Maintenance beside the writers, as an operator's cron job would run it, at the most aggressive
// settings: garbage collection and pruning with no minimum age, and the `taskpoint gc` binary.
// Killed and restarted by the runner at random instants. Reports on stdout:
//   op <name> <outcome>        one maintenance operation ended (outcome: ok, busy, blocked, exit=N)
//   err <name> <code> <msg>    it failed
import { spawn } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { latest } from '../../src/index.js'
import { collectGarbage, prune } from '../../src/admin.js'
import { Rng, codeOf, openChildStorage, say, type ChildConfig } from './common.js'

const c = JSON.parse(process.argv[2]!) as ChildConfig
const rng = new Rng(c.seed)
const storage = await openChildStorage(c)
const owner = `mt${c.seed.toString(36)}`

/** Runs the CLI; it uses default lock timings, so it may wait on a dead writer's lock: bounded by a kill. */
function cli(args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [c.cli, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    child.stderr.on('data', (d) => (err += d))
    const t = setTimeout(() => child.kill('SIGKILL'), c.cliTimeoutMs)
    child.on('exit', (code, sig) => {
      clearTimeout(t)
      // A stack trace on stderr is a defect whatever the exit code: the CLI must print clear errors.
      if (/\n\s+at .+:\d+:\d+\)?/.test(err)) say('err', `cli-${args[0]}`, 'untyped:stack', err.split('\n')[0] ?? '')
      resolve(sig ? `killed-after-${c.cliTimeoutMs}ms` : `exit=${code}`)
    })
  })
}

for (;;) {
  const op = rng.weighted({ gc: 4, prune: 3, pruneDropDamaged: 1, cliGc: 2, cliPrune: 1 })
  try {
    if (op === 'gc') {
      const g = await collectGarbage(storage, { minAgeMs: 0, locks: c.locks, owner })
      say('op', op, g.skipped ? (g.blockedBy.length ? 'blocked' : 'busy') : `deleted=${g.deletedChunks}`)
    } else if (op === 'prune' || op === 'pruneDropDamaged') {
      const r = await prune(storage, latest(2), undefined, { dropDamaged: op === 'pruneDropDamaged' })
      const g = await collectGarbage(storage, { minAgeMs: 0, locks: c.locks, owner })
      say('op', op, `deleted=${r.deleted.length},dropped=${r.dropped.length},gc=${g.skipped ? 'skipped' : g.deletedChunks}`)
    } else if (op === 'cliGc') {
      say('op', op, await cli(['gc', c.uri, '--min-age', '0s']))
    } else {
      say('op', op, await cli(['prune', c.uri, '--keep-last', '2', '--min-age', '0s']))
    }
  } catch (e) {
    say('err', op, codeOf(e), (e as Error).message)
  }
  await sleep(rng.int(20, 400))
}
