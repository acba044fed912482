import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import protobuf from 'protobufjs'
import { describe, expect, it } from 'vitest'
import { Checkpointer, PreemptionWatcher } from '../../src/index.js'
import { detectEngine, encodeErrorDocument, ErrorKind, ErrorOrigin } from '../../src/engines.js'
import { expected } from '../fixtures/loop-math.js'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const child = path.join(root, 'dist', 'test', 'fixtures', 'runtime-child.js')
const cli = path.join(root, 'dist', 'src', 'cli', 'main.js')
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'tp-proc-'))

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

function start(args: string[], env: Record<string, string> = {}) {
  const p = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const r: Run = { code: null, signal: null, stdout: '', stderr: '' }
  p.stdout.on('data', (d) => (r.stdout += d))
  p.stderr.on('data', (d) => (r.stderr += d))
  const done = new Promise<Run>((resolve) =>
    p.on('exit', (code, signal) => {
      r.code = code
      r.signal = signal
      resolve(r)
    }),
  )
  return { p, r, done }
}

const waitFor = async (cond: () => boolean, ms = 20_000): Promise<void> => {
  const t = Date.now()
  while (!cond()) {
    if (Date.now() - t > ms) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 10))
  }
}

// The flyteidl schema, as published in flyteidl/core/errors.proto (the parts error.pb uses).
const FLYTEIDL = `
syntax = "proto3";
package flyteidl.core;
message Timestamp { int64 seconds = 1; int32 nanos = 2; }
message ContainerError {
  string code = 1;
  string message = 2;
  enum Kind { NON_RECOVERABLE = 0; RECOVERABLE = 1; }
  Kind kind = 3;
  enum ErrorOrigin { UNKNOWN = 0; USER = 1; SYSTEM = 2; }
  ErrorOrigin origin = 4;
  Timestamp timestamp = 5;
  string worker = 6;
}
message ErrorDocument { ContainerError error = 1; }
`
const ErrorDocument = protobuf.parse(FLYTEIDL).root.lookupType('flyteidl.core.ErrorDocument')

describe('exit contract (real child processes)', () => {
  it('0 on success, printing the output', async () => {
    const { done } = start([child, 'loop', '20', '1'], { TASKPOINT_CHECKPOINT: tmp() })
    const r = await done
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout.trim())).toEqual({ n: 20, acc: expected(20) })
  })

  it('75 when a RecoverableError outlives the in-process retries', async () => {
    const r = await start([child, 'recoverable'], { TASKPOINT_CHECKPOINT: tmp() }).done
    expect(r.code).toBe(75)
    expect(r.stderr).toMatch(/attempt 2 failed \(no retries left\): flaky/)
  })

  it('1 at once for a permanent error', async () => {
    const r = await start([child, 'permanent'], { TASKPOINT_CHECKPOINT: tmp() }).done
    expect(r.code).toBe(1)
    expect(r.stderr).not.toMatch(/attempt 1/)
  })

  it('143 after SIGTERM, with a final save that the next process resumes from exactly', async () => {
    const uri = tmp()
    const first = start([child, 'loop', '400', '5'], { TASKPOINT_CHECKPOINT: uri })
    await waitFor(() => first.r.stderr.includes('resumes at'))
    await new Promise((r) => setTimeout(r, 300))
    first.p.kill('SIGTERM')
    const r1 = await first.done
    expect(r1.code).toBe(143)
    const saved = Number(/saved step (\d+)/.exec(r1.stderr)?.[1])
    expect(saved).toBeGreaterThan(0)
    const cp = await Checkpointer.open(uri, { repro: false })
    expect((await cp.latest())!.step).toBe(saved)
    const r2 = await start([child, 'loop', '400', '0'], { TASKPOINT_CHECKPOINT: uri }).done
    expect(r2.code).toBe(0)
    expect(r2.stderr).toContain(`resumes at ${saved}`)
    expect(JSON.parse(r2.stdout.trim()).acc).toBe(expected(400))
  })
})

describe('Flyte', () => {
  it('reads --checkpoint-path / --prev-checkpoint / FLYTE_ATTEMPT_NUMBER and treats unrendered values as none', () => {
    const e = detectEngine(['node', 'x', '--checkpoint-path', 's3://b/cp/1', '--prev-checkpoint', '""', '--output-prefix', 's3://b/out'], { FLYTE_ATTEMPT_NUMBER: '2' })
    expect(e).toEqual({ engine: 'flyte', attempt: 2, checkpoint: 's3://b/cp/1', outputPrefix: 's3://b/out' })
    const e2 = detectEngine(['node', 'x', '--checkpoint-path=s3://b/cp/2', '--prev-checkpoint={{.prevCheckpointPrefix}}'], { FLYTE_ATTEMPT_NUMBER: '0' })
    expect(e2.previousCheckpoint).toBeUndefined()
    const e3 = detectEngine(['node', 'x', '--checkpoint-path', 's3://b/cp/3', '--prev-checkpoint', 's3://b/cp/2'], {})
    expect(e3.previousCheckpoint).toBe('s3://b/cp/2')
    expect(detectEngine(['node'], { AWS_BATCH_JOB_ATTEMPT: '3', TASKPOINT_CHECKPOINT: 's3://b/x' })).toEqual({ engine: 'aws-batch', attempt: 2, checkpoint: 's3://b/x' })
    expect(detectEngine(['node', 'x', '--checkpoint', '/ckpt'], { TASKPOINT_ATTEMPT: '4' })).toEqual({ engine: 'taskpoint', attempt: 4, checkpoint: '/ckpt' })
  })

  it('error.pb decodes against the flyteidl schema', () => {
    const bytes = encodeErrorDocument({
      code: 'Preempted',
      message: 'preempted: received SIGTERM',
      kind: ErrorKind.RECOVERABLE,
      origin: ErrorOrigin.SYSTEM,
      timestamp: new Date(1_700_000_000_123),
      worker: 'pod-1',
    })
    const doc = ErrorDocument.toObject(ErrorDocument.decode(bytes), { enums: String, longs: Number }) as { error: Record<string, unknown> }
    expect(doc.error).toEqual({
      code: 'Preempted',
      message: 'preempted: received SIGTERM',
      kind: 'RECOVERABLE',
      origin: 'SYSTEM',
      timestamp: { seconds: 1_700_000_000, nanos: 123_000_000 },
      worker: 'pod-1',
    })
  })

  it('a permanent failure under Flyte writes error.pb (NON_RECOVERABLE, USER) and exits 0', async () => {
    const out = tmp()
    const r = await start([child, 'permanent', '1', '1', '--checkpoint-path', tmp(), '--prev-checkpoint', '', '--output-prefix', out], { FLYTE_ATTEMPT_NUMBER: '0' }).done
    expect(r.code).toBe(0)
    const doc = ErrorDocument.toObject(ErrorDocument.decode(readFileSync(path.join(out, 'error.pb'))), { enums: String }) as { error: Record<string, string> }
    expect(doc.error.kind ?? 'NON_RECOVERABLE').toBe('NON_RECOVERABLE')
    expect(doc.error.origin).toBe('USER')
    expect(doc.error.message).toContain('retrying will not help')
  })

  it('preemption under Flyte writes error.pb (RECOVERABLE, SYSTEM) after the final save and exits 0', async () => {
    const out = tmp()
    const cpDir = tmp()
    const run = start([child, 'loop', '1000', '5', '--checkpoint-path', cpDir, '--prev-checkpoint', '""', '--output-prefix', out], { FLYTE_ATTEMPT_NUMBER: '1' })
    await waitFor(() => run.r.stderr.includes('resumes at'))
    await new Promise((r) => setTimeout(r, 200))
    run.p.kill('SIGTERM')
    const r = await run.done
    expect(r.code).toBe(0)
    const doc = ErrorDocument.toObject(ErrorDocument.decode(readFileSync(path.join(out, 'error.pb'))), { enums: String }) as { error: Record<string, string> }
    expect(doc.error).toMatchObject({ kind: 'RECOVERABLE', origin: 'SYSTEM', code: 'Preempted' })
    const cp = await Checkpointer.open(cpDir, { repro: false })
    expect((await cp.latest())!.attempt).toBe(1)
  })
})

describe('cloud preemption notices (metadata servers on 127.0.0.1)', () => {
  async function server(handler: http.RequestListener): Promise<{ url: string; close: () => Promise<void> }> {
    const s = http.createServer(handler)
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, close: () => new Promise((r) => (s.closeAllConnections(), s.close(() => r()))) }
  }

  it('AWS: IMDSv2 token, then spot/instance-action 404 until a notice appears', async () => {
    // Behaviour, not timing: what each request carried and what the watcher did with each answer.
    let notice = false
    let tokens = 0
    const polls: ('404' | 'notice' | 'no token')[] = []
    const s = await server((req, res) => {
      if (req.method === 'PUT' && req.url === '/latest/api/token' && req.headers['x-aws-ec2-metadata-token-ttl-seconds']) {
        tokens++
        return res.end('tok')
      }
      if (req.url === '/latest/meta-data/spot/instance-action') {
        if (req.headers['x-aws-ec2-metadata-token'] !== 'tok') return polls.push('no token'), (res.statusCode = 401), res.end()
        if (!notice) return polls.push('404'), (res.statusCode = 404), res.end()
        polls.push('notice')
        return res.end(JSON.stringify({ action: 'terminate', time: '2026-11-23T17:00:00Z' }))
      }
      res.statusCode = 400
      res.end()
    })
    const w = new PreemptionWatcher({ signals: [], aws: { baseUrl: s.url, intervalMs: 20 } }).start()
    // Several "no notice" answers in a row leave the watcher quiet and polling.
    await waitFor(() => polls.length >= 3)
    expect(w.preempted).toBeUndefined()
    expect(w.signal.aborted).toBe(false)
    notice = true
    await waitFor(() => w.preempted !== undefined)
    expect(w.preempted).toMatch(/terminate at 2026-11-23T17:00:00Z/)
    expect(w.signal.aborted).toBe(true)
    expect(tokens).toBeGreaterThanOrEqual(1) // a token first (IMDSv2) ...
    expect(polls).not.toContain('no token') // ... carried by every poll
    expect(polls.at(-1)).toBe('notice')
    w.stop()
    await s.close()
  })

  it('GCE: instance/preempted with wait_for_change', async () => {
    const pending: http.ServerResponse[] = []
    const s = await server((req, res) => {
      expect(req.headers['metadata-flavor']).toBe('Google')
      expect(req.url).toBe('/computeMetadata/v1/instance/preempted?wait_for_change=true')
      pending.push(res) // held open, as the metadata server does, until the value changes
    })
    const hooks: string[] = []
    const w = new PreemptionWatcher({ signals: [], gce: { baseUrl: s.url } }).start()
    w.onPreempt((r) => void hooks.push(r))
    await waitFor(() => pending.length === 1)
    pending.shift()!.end('TRUE')
    await waitFor(() => w.preempted !== undefined)
    await w.settled()
    expect(hooks).toEqual([w.preempted])
    w.stop()
    await s.close()
  })

  it('Azure: a Preempt scheduled event', async () => {
    let events: unknown[] = [{ EventType: 'Reboot' }]
    let polls = 0
    const s = await server((req, res) => {
      polls++
      expect(req.headers.metadata).toBe('true')
      res.end(JSON.stringify({ DocumentIncarnation: 1, Events: events }))
    })
    const w = new PreemptionWatcher({ signals: [], azure: { baseUrl: s.url, intervalMs: 20 } }).start()
    await waitFor(() => polls >= 3) // other event types, polled several times, are not a preemption
    expect(w.preempted).toBeUndefined()
    events = [{ EventType: 'Preempt', NotBefore: 'Mon, 23 Nov 2026 17:00:00 GMT' }]
    await waitFor(() => w.preempted !== undefined)
    expect(w.preempted).toMatch(/Preempt/)
    w.stop()
    await s.close()
  })
})

describe('taskpoint run (the local supervisor)', () => {
  it('reruns on 75 within --retries, then gives up with the last code', async () => {
    const r = await start([cli, 'run', '--retries', '2', '--delay-ms', '10', '--checkpoint', tmp(), '--', process.execPath, child, 'recoverable']).done
    expect(r.code).toBe(75)
    expect(r.stderr.match(/taskpoint run: attempt \d+ \(pid \d+\) ended/g)).toHaveLength(3)
    expect(r.stderr).toContain('no retries left')
  })

  it('stops at once on a permanent exit code', async () => {
    const r = await start([cli, 'run', '--retries', '5', '--delay-ms', '10', '--checkpoint', tmp(), '--', process.execPath, child, 'permanent']).done
    expect(r.code).toBe(1)
    expect(r.stderr.match(/ended after/g)).toHaveLength(1)
  })

  it('passes SIGTERM to the running attempt and does not start another', async () => {
    const uri = tmp()
    const run = start([cli, 'run', '--retries', '5', '--delay-ms', '10', '--checkpoint', uri, '--', process.execPath, child, 'loop', '2000', '5'])
    await waitFor(() => run.r.stderr.includes('resumes at'))
    await new Promise((r) => setTimeout(r, 200))
    run.p.kill('SIGTERM')
    const r = await run.done
    expect(r.code).toBe(143) // the attempt saved and exited 143; the supervisor passes that on
    expect(r.stderr).toMatch(/saved step \d+/)
    expect(r.stderr.match(/ended after/g)).toHaveLength(1)
    expect(r.stderr).not.toContain('retrying')
  })

  it('SIGTERM reaches the trainer behind a wrapper that does not pass it on (sh -c, like npx tsx)', async () => {
    // sh runs node as its child and, killed by SIGTERM, dies without telling it: the trainer would
    // live on, re-parented. The supervisor signals the attempt's whole process group instead.
    const dir = tmp()
    const marker = path.join(dir, 'marker')
    const trainer = path.join(dir, 'trainer.cjs')
    writeFileSync(
      trainer,
      `process.on('SIGTERM', () => { require('fs').writeFileSync(${JSON.stringify(marker)}, 'SIGTERM'); process.exit(143) })
       console.log('pid ' + process.pid); setInterval(() => {}, 1000)`,
    )
    const run = start([cli, 'run', '--retries', '3', '--delay-ms', '10', '--', 'sh', '-c', `${JSON.stringify(process.execPath)} ${JSON.stringify(trainer)}; echo wrapper went on`])
    await waitFor(() => /pid \d+/.test(run.r.stdout))
    const trainerPid = Number(/pid (\d+)/.exec(run.r.stdout)![1])
    run.p.kill('SIGTERM')
    const r = await run.done
    try {
      await waitFor(() => !running(trainerPid)) // it exits (its new parent reaps it in its own time)
      expect(readFileSync(marker, 'utf8')).toBe('SIGTERM') // the trainer itself got the signal and saved
      expect(r.stderr.match(/ended after/g)).toHaveLength(1) // and no new attempt was started
    } finally {
      if (running(trainerPid)) process.kill(trainerPid, 'SIGKILL')
    }
  })

  it('refuses bad flags with usage and exit 2', async () => {
    const r = await start([cli, 'run', '--retries', '11', '--', 'true']).done
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/at most 10/)
  })

  it('spot preemption simulation: random SIGTERMs and SIGKILLs of the worker, same result as uninterrupted', async () => {
    const uri = tmp()
    const run = start([cli, 'run', '--retries', '10', '--delay-ms', '10', '--checkpoint', uri, '--', process.execPath, child, 'loop', '600', '4'])
    const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGKILL', 'SIGTERM', 'SIGKILL', 'SIGTERM']
    let sent = 0
    for (const sig of signals) {
      const attempts = (run.r.stderr.match(/resumes at/g) ?? []).length
      await waitFor(() => (run.r.stderr.match(/resumes at/g) ?? []).length > attempts || run.r.code !== null)
      if (run.r.code !== null) break
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 400))
      // The worker is the child of the supervisor; find its pid from the newest attempt line of /proc.
      const pid = await workerPid(run.p.pid!)
      try {
        if (pid) process.kill(pid, sig)
        if (pid) sent++
      } catch {
        // it ended on its own meanwhile
      }
    }
    const r = await run.done
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout.trim()).acc).toBe(expected(600))
    const resumed = [...r.stderr.matchAll(/resumes at (\d+)/g)].map((m) => Number(m[1]))
    // Each signal that reached a worker cost it its attempt, and the supervisor started one more
    // (how many land before the run ends depends on the machine's speed; the rule does not). Only
    // the last one may have met a worker that was already finishing on its own.
    expect(sent).toBeGreaterThan(0)
    expect(resumed.length).toBeGreaterThanOrEqual(sent)
    expect(resumed.length).toBeLessThanOrEqual(sent + 1)
    expect(resumed.slice(1).some((s) => s > 0)).toBe(true)
  }, 120_000)
})

/** Whether a process exists and has not exited (a zombie waiting to be reaped counts as exited). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

async function workerPid(supervisor: number): Promise<number | undefined> {
  const { readdirSync } = await import('node:fs')
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === supervisor) return Number(d)
    } catch {
      // the process went away meanwhile
    }
  }
  return undefined
}

describe('examples', () => {
  it('use-checkpoint runs and returns the right answer', async () => {
    const r = await start([path.join(root, 'dist', 'examples', 'use-checkpoint.js'), tmp()]).done
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/use_checkpoint\(10\) = 9/)
    expect(r.stderr.match(/attempt \d failed/g)).toHaveLength(3)
  })
})
