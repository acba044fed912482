// One backend's campaign: writers killed at random instants, maintenance beside them, damage and
// proxy faults at random, and a fresh reader's check after every writer's end.
import { CreateBucketCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs/promises'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { CorruptCheckpointError, MANIFEST_DIR, parseManifestKey } from '../../src/format/manifest.js'
import { Checkpointer, keepAll, openStorage, type OpenStorageOptions, type Storage } from '../../src/index.js'
import { collectGarbage, prune } from '../../src/admin.js'
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js'
import { Rng, codeOf, contentHash, mix, type ChildConfig } from './common.js'
import { DAMAGE_KINDS, damage } from './damage.js'
import { Expectations, newTally, type Tally } from './expect.js'

export type BackendName = 'local' | 's3' | 'gcs'

export interface CampaignOptions {
  seconds: number
  seed: number
  /** A read (or a writer's open) that takes longer than this is a hang. */
  readDeadlineMs: number
  /** Writers are killed within this long after they start writing. */
  killMaxMs: number
  /** Where the compiled campaign scripts are (dist/test/campaign) and the CLI binary. */
  distDir: string
  cli: string
  /** Endpoints of the test servers (for s3/gcs). */
  endpoint?: string
  log: (line: string) => void
  /**
   * Self-test of the checker: after each writer, delete the newest resolved write's manifest
   * *without* recording it as our damage. A campaign run with this must miss the exactness bar.
   */
  sabotage?: boolean
  /**
   * Also freeze (SIGSTOP) a writer or the maintainer for up to twice the lock stale time, then let
   * it go on (SIGCONT): the attack on lease-based locks, beyond what a kill can do.
   */
  pauses?: boolean
}

const BUCKET = 'taskpoint-campaign'
const PROJECT = 'taskpoint-test'
const MAX_FINDINGS = 40
/** Each writer's steps are `stepBase + n`: a million per writer keeps steps unique and in commit order. */
const STEPS_PER_WRITER = 1_000_000
/** Half the runs use steps near the top of the safe integers (keys wider than 12 digits). */
const HIGH_BASE = 9_000_000_000_000_000

// Fault kinds of today's proxy, and the ones the extended proxy adds (used when it has them).
const BASE_FAULTS = ['status500', 'status503', 'reset', 'stall'] as const
const NEW_FAULTS = ['closeEarly', 'truncate', 'corrupt', 'loseResponse'] as const
type InjectFault = Parameters<FaultProxy['inject']>[0]

class HangError extends Error {}

/** Races `p` against a deadline; a read that does not end within it is a hang, whatever it was waiting for. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined
  const timer = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new HangError(`${what} did not end within ${ms} ms`)), ms)
  })
  p.catch(() => {}) // a hung operation that fails later must not become an unhandled rejection
  return Promise.race([p, timer]).finally(() => clearTimeout(t))
}

interface Child {
  proc: ChildProcess
  /** Signals go to the child's whole process group (the maintainer's `taskpoint` children too). */
  signal(sig: NodeJS.Signals): void
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  stderr: () => string
  killedByUs: boolean
}

function spawnChild(script: string, config: ChildConfig, env: Record<string, string>, onLine: (words: string[], line: string) => void): Child {
  // Its own process group, so a kill or a freeze reaches the CLI processes it started as well.
  const proc = spawn(process.execPath, [script, JSON.stringify(config)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-proc.pid!, sig)
    } catch {
      // the group is gone already
    }
  }
  let err = ''
  proc.stderr!.on('data', (d) => (err.length < 20_000 ? (err += d) : undefined))
  const rl = createInterface({ input: proc.stdout! })
  rl.on('line', (line) => onLine(line.split(' '), line))
  // Resolve only once stdout is drained, so every line the child printed has been handled.
  const closed = new Promise<void>((r) => rl.once('close', r))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.once('exit', (code, signal) => void closed.then(() => r({ code, signal }))))
  return { proc, signal, exited, stderr: () => err, killedByUs: false }
}

async function kill(c: Child | undefined): Promise<void> {
  if (!c) return
  if (c.proc.exitCode === null && c.proc.signalCode === null) c.killedByUs = true
  // The whole group, even when the leader already ended: a CLI process it started may live on.
  c.signal('SIGKILL')
  await c.exited
}

/** Files a killed writer or restore may leave: library temp names only. */
async function leftovers(dirs: string[]): Promise<{ files: string[]; bytes: number }> {
  const files: string[] = []
  let bytes = 0
  const walk = async (d: string): Promise<void> => {
    let entries: import('node:fs').Dirent[]
    try {
      entries = await fs.readdir(d, { withFileTypes: true })
    } catch {
      return
    }
    for (const e of entries) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) await walk(p)
      else if (e.name.includes('.tp-tmp-') || e.name.includes('.tp-restore-')) {
        files.push(p)
        bytes += (await fs.stat(p).catch(() => ({ size: 0 }))).size
      }
    }
  }
  for (const d of dirs) await walk(d)
  return { files, bytes }
}

export async function runBackend(name: BackendName, o: CampaignOptions): Promise<Tally> {
  const t = newTally(name, o.seconds)
  const rng = new Rng(mix(o.seed, name))
  const exp = new Expectations()
  const note = (s: string): void => {
    if (t.findings.length < MAX_FINDINGS) t.findings.push(s)
    o.log(`  [${name}] ${s}`)
  }
  const base = await fs.mkdtemp(path.join(process.env.CAMPAIGN_TMP ?? (await import('node:os')).tmpdir(), `tp-campaign-${name}-`))
  const restoreDir = path.join(base, 'restore')
  const prefix = `c-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`
  const uri = name === 'local' ? path.join(base, 'store') : `${name === 's3' ? 's3' : 'gs'}://${BUCKET}/${prefix}`
  const stepHigh = rng.next() < 0.5 ? HIGH_BASE : 0
  o.log(`[${name}] ${uri} (steps from ${stepHigh})`)

  // The fault proxy sits between every child and the server; checks read straight from the server.
  let proxy: FaultProxy | undefined
  let faultKinds: string[] = []
  let conditionalCreate = false
  const env: Record<string, string> = {}
  if (name !== 'local') {
    const start = startFaultProxy as (target: string, options?: { enforceConditionalCreates?: boolean }) => Promise<FaultProxy>
    proxy = await start(o.endpoint!, { enforceConditionalCreates: true })
    faultKinds = [...BASE_FAULTS, ...NEW_FAULTS.filter((k) => k in proxy!.served)]
    // Only the extended proxy enforces `If-None-Match: *` / `ifGenerationMatch: 0`; neither server does.
    conditionalCreate = 'enforceConditionalCreates' in proxy
    for (const k of faultKinds) t.faultKinds[k] = 0
    if (name === 's3') {
      Object.assign(env, { AWS_ENDPOINT_URL: proxy.url, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' })
      const s3 = new S3Client(s3Config(o.endpoint!))
      await s3.send(new CreateBucketCommand({ Bucket: BUCKET })).catch((e: { name?: string }) => {
        if (e.name !== 'BucketAlreadyOwnedByYou' && e.name !== 'BucketAlreadyExists') throw e
      })
      s3.destroy()
    } else Object.assign(env, { STORAGE_EMULATOR_HOST: proxy.url, GOOGLE_CLOUD_PROJECT: PROJECT })
  }
  const retry = { retries: 4, minTimeoutMs: 20, maxTimeoutMs: 300 }
  const requestTimeoutMs = 1500
  const locks = { staleMs: 2000, refreshMs: 300, waitMs: 1500 }
  const storageOptions = (endpoint: string | undefined): OpenStorageOptions => ({
    retry,
    s3: { retry, requestTimeoutMs, conditionalCreate: false, ...(endpoint ? { clientConfig: s3Config(endpoint) } : {}) },
    gcs: { retry, requestTimeoutMs, conditionalCreate: false, ...(endpoint ? { clientOptions: { apiEndpoint: endpoint, projectId: PROJECT } } : {}) },
  })
  const direct: Storage = await openStorage(uri, storageOptions(o.endpoint))
  const faulty: Storage | undefined = proxy ? await openStorage(uri, storageOptions(proxy.url)) : undefined
  const quiet = { repro: false as const, onWarning: () => {} }
  const served = (): number => (proxy ? Object.values(proxy.served).reduce((s: number, n) => s + (n as number), 0) : 0)
  const servedAtStart = served()

  // Stalls cost a whole request timeout each: rarer than the rest so a run still does many kills.
  const faultWeights = Object.fromEntries(faultKinds.map((k) => [k, k === 'stall' ? 1 : 3])) as Record<string, number>
  const injectSome = (max: number): void => {
    if (!proxy) return
    // Now and then a burst of one fault on one kind of request, more than the retries absorb, so
    // operations really fail (and a write that failed must not have committed).
    const burst = rng.next() < 0.12
    const count = burst ? retry.retries + rng.int(1, 2) : rng.int(0, max)
    let kind = rng.weighted(faultWeights)
    // Mostly whatever request comes next; sometimes only downloads (GET) or only uploads (PUT/POST).
    const which = rng.weighted({ any: 3, get: 2, put: 2 })
    for (let n = count; n > 0; n--) {
      const m =
        which === 'any' ? undefined : which === 'get' ? (r: { method?: string }) => r.method === 'GET' : (r: { method?: string }) => r.method === 'PUT' || r.method === 'POST'
      ;(proxy.inject as (f: InjectFault, m?: unknown) => void)([kind] as InjectFault, m)
      if (!burst) kind = rng.weighted(faultWeights)
    }
  }
  const clearFaults = (): void => {
    const p = proxy as (FaultProxy & { clearFaults?: () => number }) | undefined
    p?.clearFaults?.()
  }

  const childConfig = (seed: number, stepBase: number, workDir: string): ChildConfig => ({
    uri,
    seed,
    payloadSeed: mix(o.seed, name, 'payload'),
    stepBase,
    workDir,
    restoreDir,
    retry,
    requestTimeoutMs,
    locks,
    conditionalCreate,
    cli: o.cli,
    cliTimeoutMs: 6000,
  })

  // ------------------------------------------------------------------ maintenance beside the writers
  let maintainer: Child | undefined
  const startMaintainer = (i: number): void => {
    maintainer = spawnChild(path.join(o.distDir, 'maintainer.js'), childConfig(mix(o.seed, name, 'mt', i), 0, base), env, (w, line) => {
      if (w[0] !== 'op' && w[0] !== 'err') return
      t.operations++
      const what = w[2] ?? ''
      const outcome = w[0] === 'err' ? `error ${what}` : what.startsWith('deleted') ? (what.includes('gc=skipped') ? 'gc-skipped' : 'ok') : what
      t.maintenance[`${w[1]} ${outcome}`] = (t.maintenance[`${w[1]} ${outcome}`] ?? 0) + 1
      if (w[0] === 'err' && w[2]?.startsWith('untyped')) {
        t.untypedErrors++
        note(`maintainer ${w[1]}: untyped error ${line.slice(0, 300)}`)
      }
    })
  }
  const stopMaintainer = async (): Promise<void> => {
    const m = maintainer
    maintainer = undefined
    if (!m) return
    await kill(m)
    const r = await m.exited
    if (!m.killedByUs) {
      t.crashes++
      note(`maintainer died on its own (code ${r.code}): ${m.stderr().slice(0, 400)}`)
    }
  }

  // ------------------------------------------------------------------ checks
  let pendingFailed: number[] = []
  const judge = (step: number, hash: string, where: string): void => {
    const bad = exp.judge(step, hash)
    if (bad) {
      t.wrongBytes++
      note(`WRONG BYTES (${where}): ${bad}`)
    }
  }
  const untyped = (e: unknown, where: string): boolean => {
    if (!codeOf(e).startsWith('untyped')) return false
    t.untypedErrors++
    note(`untyped error (${where}): ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' | ')}`)
    return true
  }

  /** A fresh reader straight to the server: everything it lists must read back exactly, the newest resolved write must be there. */
  const cleanCheck = async (where: string): Promise<void> => {
    const floor = exp.floor()
    try {
      const cp = await within(Checkpointer.open(direct, quiet), o.readDeadlineMs, `${where}: open`)
      const infos = await within(cp.list(), o.readDeadlineMs, `${where}: list`)
      t.operations++
      for (const s of cp.lastSkipped) {
        const step = parseManifestKey(s.id)?.step
        if (step !== undefined && !exp.excused.has(step) && !s.vanished) {
          t.damagedByLibrary++
          note(`DAMAGED, not by us (${where}): manifest ${s.id}: ${s.reason}`)
        }
      }
      for (const info of infos) {
        t.operations++
        try {
          const got = (await within(cp.load(info.id), o.readDeadlineMs, `${where}: load ${info.id}`))!
          if (got.info.id !== info.id || parseManifestKey(got.info.id)?.step !== got.info.step) {
            t.wrongBytes++
            note(`WRONG CHECKPOINT (${where}): asked for ${info.id}, got ${got.info.id} step ${got.info.step}`)
          }
          judge(got.info.step, contentHash(got.files), `${where}: load(${info.step})`)
        } catch (e) {
          if (e instanceof HangError) throw e
          if (e instanceof CorruptCheckpointError) {
            if (!exp.excused.has(info.step)) {
              t.damagedByLibrary++
              note(`DAMAGED, not by us (${where}): step ${info.step} ${info.id}: ${e.reason}`)
            }
          } else if (!untyped(e, `${where}: load(${info.step})`)) note(`clean read of step ${info.step} failed (${where}): ${codeOf(e)} ${(e as Error).message}`)
        }
      }
      t.operations++
      const got = await within(cp.load(), o.readDeadlineMs, `${where}: load newest`)
      if (got) judge(got.info.step, contentHash(got.files), `${where}: newest`)
      if (floor !== undefined && (!got || got.info.step < floor)) {
        t.resolvedLost++
        note(
          `RESOLVED WRITE LOST (${where}): step ${floor} resolved and not damaged by us, but the newest readable is ${got ? got.info.step : 'nothing'}; skipped: ${cp.lastSkipped.map((s) => `${s.id} (${s.reason})`).join('; ') || 'none'}`,
        )
      }
      await cp.close()
    } catch (e) {
      if (e instanceof HangError) {
        t.hangs++
        note(`HANG: ${e.message}`)
        return
      }
      if (!untyped(e, where)) note(`clean check failed (${where}): ${codeOf(e)} ${(e as Error).message}`)
    }
    // A write reported failed must not have committed. Checked at once: the writer stopped on it.
    if (pendingFailed.length > 0) {
      const steps = new Set<number>()
      for await (const ob of direct.list(MANIFEST_DIR)) {
        const n = parseManifestKey(ob.key)
        if (n) steps.add(n.step)
      }
      for (const f of pendingFailed) {
        if (steps.has(f)) {
          t.committedButReportedFailed++
          note(`COMMITTED BUT REPORTED FAILED (${where}): step ${f}`)
        }
      }
      pendingFailed = []
    }
  }

  /** A fresh reader through the proxy with faults queued: exact bytes, a fallback or a typed error, within the deadline. */
  const faultyCheck = async (where: string): Promise<void> => {
    if (!faulty) return
    injectSome(3)
    t.operations++
    const floor = exp.floor()
    try {
      const cp = await within(Checkpointer.open(faulty, quiet), o.readDeadlineMs, `${where}: open through faults`)
      const got = await within(cp.load(), o.readDeadlineMs, `${where}: load through faults`)
      if (got) judge(got.info.step, contentHash(got.files), `${where}: through faults`)
      if (floor !== undefined && (!got || got.info.step < floor)) t.fallbacksUnderFaults++
      await cp.close()
    } catch (e) {
      if (e instanceof HangError) {
        t.hangs++
        note(`HANG: ${e.message}`)
      } else if (!untyped(e, `${where}: through faults`)) t.readErrorsUnderFaults++
    }
    clearFaults()
  }

  // ------------------------------------------------------------------ the loop
  const deadline = performance.now() + o.seconds * 1000
  // A sabotage run goes on until it has sabotaged once (bounded), so its self-test never depends
  // on how much a loaded machine got done in the time given.
  let sabotaged = false
  const hardStop = deadline + 120_000
  for (let i = 1; performance.now() < deadline || (o.sabotage && !sabotaged && performance.now() < hardStop); i++) {
    if (!maintainer && rng.next() < 0.85) startMaintainer(i)
    const workDir = path.join(base, `w${i}`)
    await fs.mkdir(workDir, { recursive: true })
    const floorAtStart = exp.floor()
    let started = false
    let resolvedStarted!: () => void
    const startedP = new Promise<void>((r) => (resolvedStarted = r))
    const writer = spawnChild(path.join(o.distDir, 'writer.js'), childConfig(mix(o.seed, name, 'w', i), stepHigh + i * STEPS_PER_WRITER, workDir), env, (w, line) => {
      const step = Number(w[1])
      switch (w[0]) {
        case 'start':
          started = true
          resolvedStarted()
          break
        case 'attempt':
          t.operations++
          exp.attempt(step, w[3]!)
          break
        case 'ok':
          t.resolvedWrites++
          exp.resolve(step)
          break
        case 'fail':
          pendingFailed.push(step)
          if (w[2]?.startsWith('untyped')) untyped(Object.assign(new Error(line), { name: w[2] }), `writer write ${step}`)
          else o.log(`  [${name}] writer ${i}: write ${step} rejected: ${w.slice(2).join(' ').slice(0, 200)}`)
          break
        case 'afail':
          t.ambiguousFailures++
          if (w[2]?.startsWith('untyped')) untyped(Object.assign(new Error(line), { name: w[2] }), `writer flush ${w[1]}`)
          break
        case 'startfail':
          if (w[1]?.startsWith('untyped')) untyped(Object.assign(new Error(line), { name: w[1] }), `writer ${i} start`)
          break
        case 'restored':
        case 'loaded':
          t.operations++
          judge(step, w[2]!, `writer ${i} ${w[0]}`)
          // Resuming through the faulty proxy may fall back (a transient fault can look like damage); it must not return wrong bytes.
          if (floorAtStart !== undefined && step < floorAtStart) {
            if (proxy) t.fallbacksUnderFaults++
            else {
              t.resolvedLost++
              note(`RESOLVED WRITE LOST (writer ${i} ${w[0]}): resumed from ${step}, but ${floorAtStart} was resolved and not damaged by us`)
            }
          }
          break
        case 'resumed-none':
          t.operations++
          if (floorAtStart !== undefined) {
            if (proxy) t.fallbacksUnderFaults++
            else {
              t.resolvedLost++
              note(`RESOLVED WRITE LOST (writer ${i} resume): found nothing, but ${floorAtStart} was resolved and not damaged by us`)
            }
          }
          break
      }
    })
    injectSome(3)
    const exited = writer.exited.then(() => 'exited' as const)
    // Most kills come after the writer is up; some while it opens or resumes.
    if (rng.next() < 0.8) {
      const r = await Promise.race([startedP.then(() => 'started' as const), exited, sleep(o.readDeadlineMs).then(() => 'late' as const)])
      if (r === 'late' && !started) {
        t.hangs++
        note(`HANG: writer ${i} did not open its checkpoint location within ${o.readDeadlineMs} ms`)
      }
    }
    const killAt = rng.int(0, o.killMaxMs)
    const midFaults = setTimeout(() => injectSome(2), rng.int(0, killAt))
    const timers = [midFaults]
    let waitFor = killAt
    if (o.pauses && rng.next() < 0.5) {
      const victim = maintainer && rng.next() < 0.5 ? maintainer : writer
      const at = rng.int(0, killAt)
      const hold = rng.int(locks.staleMs / 2, locks.staleMs * 2)
      t.pauses++
      timers.push(
        setTimeout(() => victim.signal('SIGSTOP'), at),
        setTimeout(() => victim.signal('SIGCONT'), at + hold),
      )
      // Let the frozen process go on for a while before the kill, so what it does after waking is seen.
      waitFor = at + hold + rng.int(0, o.killMaxMs)
    }
    await Promise.race([sleep(waitFor), exited])
    for (const tm of timers) clearTimeout(tm)
    await kill(writer)
    const r = await writer.exited
    if (writer.killedByUs) t.kills++
    else if (r.code === 3) t.writerStops++
    else if (r.code === 4) t.startFailures++
    else {
      t.crashes++
      note(`writer ${i} died on its own (code ${r.code}, signal ${r.signal}): ${writer.stderr().slice(0, 600)}`)
    }

    await stopMaintainer()
    clearFaults()
    if (rng.next() < 0.35) {
      const kind = rng.weighted(DAMAGE_KINDS)
      try {
        const d = await damage(direct, rng, kind)
        if (d) {
          const present = new Set<number>()
          for await (const ob of direct.list(MANIFEST_DIR)) {
            const n = parseManifestKey(ob.key)
            if (n) present.add(n.step)
          }
          exp.damaged(d, present)
          t.damages++
          t.damageKinds[kind] = (t.damageKinds[kind] ?? 0) + 1
        }
      } catch (e) {
        note(`damage ${kind} failed: ${codeOf(e)} ${(e as Error).message}`)
      }
    }
    if (o.sabotage) {
      // The newest resolved write and everything after it (a killed writer may have committed a
      // newer step it never reported, which would otherwise hide the loss from the checker).
      const victim = exp.floor()
      for await (const ob of direct.list(MANIFEST_DIR)) {
        const step = parseManifestKey(ob.key)?.step
        if (victim !== undefined && step !== undefined && step >= victim) {
          await direct.delete(ob.key)
          sabotaged = true
        }
      }
    }
    await faultyCheck(`after writer ${i}`)
    await cleanCheck(`after writer ${i}`)
  }

  // ------------------------------------------------------------------ the end: one last gc with nobody alive
  await stopMaintainer()
  clearFaults()
  try {
    // GC deletes nothing while a damaged manifest exists; damage we did is dropped first, as an operator would.
    const dropped = await prune(direct, keepAll, undefined, { dropDamaged: true })
    for (const d of dropped.dropped) {
      const step = parseManifestKey(d.id)?.step
      if (step !== undefined && !exp.excused.has(step)) note(`final prune dropped ${d.id}, which we never damaged: ${d.reason}`)
    }
    // Dead writers' locks go stale after staleMs: wait that long at most, then collect.
    // A killed collector's exclusive lock makes the next one give way at once until it is stale.
    let g = await collectGarbage(direct, { minAgeMs: 0, sweepAgeMs: 0, locks: { ...locks, waitMs: locks.staleMs * 3 } })
    for (let n = 0; g.skipped && g.blockedBy.length === 0 && n < 5; n++) {
      await sleep(locks.staleMs)
      g = await collectGarbage(direct, { minAgeMs: 0, sweepAgeMs: 0, locks: { ...locks, waitMs: locks.staleMs * 3 } })
    }
    o.log(`  [${name}] final gc: ${g.skipped ?? `deleted ${g.deletedChunks} chunk(s), ${g.staleLocks} stale lock(s), swept ${JSON.stringify(g.swept)}`}`)
    if (g.skipped) note(`final gc did nothing: ${g.skipped}`)
    // The next restore sweeps what killed restores left in the directories it writes.
    const cp = await Checkpointer.open(direct, quiet)
    await within(cp.restore(restoreDir), o.readDeadlineMs, 'final restore').catch((e: unknown) => {
      if (e instanceof HangError) {
        t.hangs++
        note(`HANG: ${e.message}`)
      } else if (!untyped(e, 'final restore')) note(`final restore failed: ${codeOf(e)} ${(e as Error).message}`)
    })
    await cp.close()
  } catch (e) {
    if (!untyped(e, 'final gc')) note(`final gc failed: ${codeOf(e)} ${(e as Error).message}`)
  }
  await cleanCheck('after the final gc')
  const left = await leftovers(name === 'local' ? [base] : [restoreDir, base])
  t.leftoverTempBytes = left.bytes
  t.leftoverTempFiles = left.files.length
  if (left.files.length > 0)
    note(
      `leftover temp files after the final gc: ${left.files.length} (${left.bytes} bytes), e.g. ${left.files
        .slice(0, 3)
        .map((f) => path.relative(base, f))
        .join(', ')}`,
    )
  if (name === 's3') {
    try {
      const s3 = new S3Client(s3Config(o.endpoint!))
      const r = await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: `${prefix}/` }))
      t.unfinishedUploads = r.Uploads?.length ?? 0
      s3.destroy()
    } catch {
      t.unfinishedUploads = undefined // the test server cannot list them
    }
  }

  t.faultsInjected = served() - servedAtStart
  if (proxy) for (const k of faultKinds) t.faultKinds[k] = (proxy.served as Record<string, number>)[k] ?? 0
  await proxy?.close()
  await direct.close()
  await faulty?.close()
  if (!process.env.CAMPAIGN_KEEP) await fs.rm(base, { recursive: true, force: true })
  return t
}

export function s3Config(endpoint: string) {
  return { endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } }
}
