import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Storage } from '../storage/types.js'
import { ConfigError } from '../errors.js'
import { MAX_TIMER_MS, isTimerMs } from '../timer-range.js'

/**
 * Locks that let maintenance run beside live writers, after restic's design: a writer holds a
 * *shared* lock while it commits (from its first chunk upload to its manifest), garbage collection
 * holds an *exclusive* one while it decides what to delete. Each is an object under `locks/`; a lock
 * is taken by writing it and then listing `locks/`, so with a strongly consistent store (local disk,
 * S3 and GCS all are) of two parties that race, at least one sees the other:
 *
 * - a writer that sees a live exclusive lock withdraws its own and waits until the lock is gone;
 * - a collector that sees another exclusive lock withdraws (tie: both back off); one that sees
 *   shared locks waits for them to be released (new commits now wait for it), up to `waitMs`.
 *
 * Locks are refreshed (rewritten) every `refreshMs` while held. A lock not rewritten for `staleMs`
 * belongs to a dead process and is removed by whoever finds it. Age is measured on the store's own
 * clock (a lock's modification time against that of the finder's own, fresh lock), so clock skew
 * between machines does not matter. A holder that could not refresh in time, or whose lock was
 * removed as stale, knows it (`lost`) and must not trust what it did under the lock.
 */
export const LOCK_DIR = 'locks/'

export interface LockOptions {
  /** A lock not refreshed for this long is dead. Default 3 minutes. */
  staleMs?: number
  /** How often a held lock is rewritten. Default staleMs / 6 (30 s). */
  refreshMs?: number
  /** A collector waits this long for writers' commits to end before giving up. Default 60 s. */
  waitMs?: number
}

export type LockKind = 'shared' | 'exclusive'

interface Resolved {
  staleMs: number
  refreshMs: number
  waitMs: number
}

/** The lock timings with their defaults, each checked: a Checkpointer checks them at open. */
export function lockSettings(given: LockOptions | null = {}): Resolved {
  const o = given ?? {}
  const staleMs = o.staleMs ?? 3 * 60_000
  // Below a second, a lock would be taken for dead whenever one write of its refresh is slow.
  if (!(Number.isFinite(staleMs) && staleMs >= 1000)) throw new ConfigError(`locks.staleMs must be a number of ms >= 1000, got ${String(staleMs)}`)
  const refreshMs = o.refreshMs ?? staleMs / 6
  // A holder takes its own lock for lost once 0.8 staleMs pass without a refresh, and a refresh is
  // a write that takes time: at most half of staleMs leaves room for one that is slow.
  if (!(refreshMs > 0 && refreshMs <= staleMs / 2 && isTimerMs(refreshMs))) {
    throw new ConfigError(`locks.refreshMs must be a number of ms above 0, at most half of locks.staleMs (${staleMs}) and at most ${MAX_TIMER_MS}, got ${String(refreshMs)}`)
  }
  const waitMs = o.waitMs ?? 60_000
  // Infinity: a collector waits for commits in flight however long they take.
  if (!(typeof waitMs === 'number' && waitMs >= 0)) throw new ConfigError(`locks.waitMs must be a number of ms >= 0, got ${String(waitMs)}`)
  return { staleMs, refreshMs, waitMs }
}

interface Seen {
  key: string
  kind: LockKind
  lastModified: number | undefined
}

const LOCK_RE = /^locks\/(shared|exclusive)-[0-9a-z]+-[0-9a-f]{16}\.json$/

async function listLocks(storage: Storage): Promise<Seen[]> {
  const out: Seen[] = []
  for await (const o of storage.list(LOCK_DIR)) {
    const m = LOCK_RE.exec(o.key)
    if (m) out.push({ key: o.key, kind: m[1] as LockKind, lastModified: o.lastModified?.getTime() })
  }
  return out
}

/** A lock this process holds. */
export class HeldLock {
  private timer: NodeJS.Timeout | undefined
  private lastRefresh = performance.now()
  private lostReason: string | undefined
  private released = false
  /** The refresh under way, if any (one at a time): release() waits for it. */
  private refreshing: Promise<void> | undefined

  constructor(
    private readonly storage: Storage,
    readonly key: string,
    private readonly body: Uint8Array,
    private readonly o: Resolved,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.refreshing ??= this.refresh().finally(() => (this.refreshing = undefined))
    }, this.o.refreshMs)
    this.timer.unref()
  }

  private async refresh(): Promise<void> {
    if (this.released || this.lostReason) return
    // After a gap (a paused process), others may already have taken the lock for dead: it must
    // not be revived by a rewrite that would hide that.
    if (this.lost) {
      this.lostReason = this.lost
      return
    }
    try {
      // Rewriting a lock that was removed as stale would hide that it was: check first.
      if (!(await this.storage.head(this.key))) {
        this.lostReason = 'it was removed as stale by another process'
        return
      }
      if (this.released) return
      await this.storage.put(this.key, this.body, { ephemeral: true })
      this.lastRefresh = performance.now()
    } catch {
      // A failed refresh is retried by the next tick; `lost` turns true if none succeeds in time.
    }
  }

  /** Why the lock can no longer be trusted, or undefined while it holds. */
  get lost(): string | undefined {
    if (this.lostReason) return this.lostReason
    // A margin of a fifth: the lock must never be considered held when others may think it stale.
    if (performance.now() - this.lastRefresh > this.o.staleMs * 0.8) return `it was not refreshed for ${Math.round((performance.now() - this.lastRefresh) / 1000)} s`
    return undefined
  }

  /** Re-reads the lock object: undefined while it is intact and fresh, else why not. */
  async check(): Promise<string | undefined> {
    if (this.lost) return this.lost
    if (!(await this.storage.head(this.key))) this.lostReason = 'it was removed as stale by another process'
    return this.lost
  }

  async release(): Promise<void> {
    if (this.released) return
    this.released = true
    clearInterval(this.timer)
    // A refresh that found the lock there before this delete would write it back after it: a
    // lock of a live process on this host that nobody holds, blocking collection until stale.
    await this.refreshing
    await this.storage.delete(this.key)
  }
}

async function put(storage: Storage, kind: LockKind, owner: string, o: Resolved): Promise<HeldLock> {
  const key = `${LOCK_DIR}${kind}-${owner}-${randomBytes(8).toString('hex')}.json`
  const body = Buffer.from(JSON.stringify({ kind, owner, pid: process.pid, host: hostname(), at: new Date().toISOString() }))
  // A lock need not outlive its process, let alone a power loss: no fsyncs.
  await storage.put(key, body, { ephemeral: true })
  return new HeldLock(storage, key, body, o)
}

/**
 * Splits a listing into live locks of others and stale ones, aging them on the store's clock. A
 * lock of a process on this very host that no longer runs is stale at once (its body names host
 * and pid): a killed job that restarts on the same machine does not wait out its own old lock.
 */
async function classify(storage: Storage, all: Seen[], mine: string, o: Resolved): Promise<{ live: Seen[]; stale: Seen[] }> {
  const ref = all.find((l) => l.key === mine)?.lastModified ?? Date.now()
  const live: Seen[] = []
  const stale: Seen[] = []
  for (const l of all) {
    if (l.key === mine) continue
    if (l.lastModified !== undefined && ref - l.lastModified > o.staleMs) stale.push(l)
    else if (await deadHere(storage, l.key)) stale.push(l)
    else live.push(l)
  }
  return { live, stale }
}

async function deadHere(storage: Storage, key: string): Promise<boolean> {
  let body: { host?: unknown; pid?: unknown }
  try {
    body = JSON.parse(Buffer.from(await storage.get(key)).toString('utf8')) as { host?: unknown; pid?: unknown }
  } catch {
    return false // gone meanwhile, or unreadable: judged by age alone
  }
  if (body.host !== hostname() || typeof body.pid !== 'number' || body.pid === process.pid) return false
  try {
    process.kill(body.pid, 0)
    return false
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

/**
 * Takes a shared lock for one commit, waiting while a collector holds the exclusive lock.
 * `signal` ends the wait.
 */
export async function acquireShared(storage: Storage, owner: string, options?: LockOptions, signal?: AbortSignal): Promise<HeldLock> {
  const o = lockSettings(options)
  let pause = 20
  for (;;) {
    const lock = await put(storage, 'shared', owner, o)
    const { live, stale } = await classify(storage, await listLocks(storage), lock.key, o)
    const blocking = live.filter((l) => l.kind === 'exclusive')
    for (const s of stale.filter((l) => l.kind === 'exclusive')) await storage.delete(s.key)
    if (blocking.length === 0) {
      lock.start()
      return lock
    }
    // Withdraw while waiting, or the collector would wait for us while we wait for it.
    await lock.release()
    signal?.throwIfAborted()
    await sleep(pause, undefined, signal ? { signal } : {})
    pause = Math.min(pause * 2, 1000)
  }
}

export interface ExclusiveResult {
  lock?: HeldLock
  /** Why the lock was not taken. */
  busy?: string
  /** Locks of dead processes that were removed on the way. */
  staleRemoved: string[]
}

/** Tries to take the exclusive lock: waits up to `waitMs` for commits in flight, gives way to another collector. */
export async function acquireExclusive(storage: Storage, owner: string, options?: LockOptions): Promise<ExclusiveResult> {
  const o = lockSettings(options)
  const lock = await put(storage, 'exclusive', owner, o)
  lock.start()
  const staleRemoved: string[] = []
  const deadline = performance.now() + o.waitMs
  let pause = 20
  for (;;) {
    const { live, stale } = await classify(storage, await listLocks(storage), lock.key, o)
    for (const s of stale) {
      await storage.delete(s.key)
      staleRemoved.push(s.key)
    }
    if (live.some((l) => l.kind === 'exclusive')) {
      await lock.release()
      return { busy: 'another garbage collection holds the exclusive lock', staleRemoved }
    }
    if (live.length === 0) return { lock, staleRemoved }
    if (performance.now() >= deadline) {
      await lock.release()
      return { busy: `${live.length} writer(s) kept committing for ${Math.round(o.waitMs / 1000)} s`, staleRemoved }
    }
    await sleep(pause)
    pause = Math.min(pause * 2, 500)
  }
}
