import { PreemptedError } from './errors.js'

export interface MetadataPollOptions {
  /** Base URL of the metadata service; tests point it at 127.0.0.1. */
  baseUrl?: string
  /** Poll interval in ms. */
  intervalMs?: number
}

export interface PreemptionOptions {
  /** Signals that mean "you are being stopped". Default SIGTERM and SIGINT. */
  signals?: NodeJS.Signals[]
  /** Poll the EC2 spot instance-action notice through IMDSv2 (default base http://169.254.169.254, every 5 s). Off unless set. */
  aws?: boolean | MetadataPollOptions
  /** Watch GCE's `instance/preempted` (default base http://metadata.google.internal). Off unless set. */
  gce?: boolean | MetadataPollOptions
  /** Poll Azure Scheduled Events for `Preempt` (default base http://169.254.169.254, every 5 s). Off unless set. */
  azure?: boolean | MetadataPollOptions
}

type Hook = (reason: string) => void | Promise<void>

/**
 * Turns "this machine is going away" (a signal, or a cloud's preemption notice) into one event:
 * an aborted `signal` (reason: PreemptedError) and a run of the registered hooks, once.
 */
export class PreemptionWatcher {
  private readonly controller = new AbortController()
  private readonly hooks = new Set<Hook>()
  private readonly stops: (() => void)[] = []
  private reasonText: string | undefined
  private hooksDone: Promise<void> = Promise.resolve()

  constructor(private readonly options: PreemptionOptions = {}) {}

  get signal(): AbortSignal {
    return this.controller.signal
  }

  /** Why preemption was announced, or undefined if it was not. */
  get preempted(): string | undefined {
    return this.reasonText
  }

  /** Resolves when every hook started by the preemption has finished. */
  settled(): Promise<void> {
    return this.hooksDone
  }

  onPreempt(hook: Hook): () => void {
    this.hooks.add(hook)
    // A hook added after the fact still runs: a late subscriber must not miss its final save.
    if (this.reasonText !== undefined) this.hooksDone = Promise.all([this.hooksDone, runHook(hook, this.reasonText)]).then(() => {})
    return () => this.hooks.delete(hook)
  }

  start(): this {
    for (const sig of this.options.signals ?? ['SIGTERM', 'SIGINT']) {
      const h = (): void => this.trigger(`received ${sig}`)
      process.on(sig, h)
      this.stops.push(() => process.off(sig, h))
    }
    if (this.options.aws) this.stops.push(pollAws(opts(this.options.aws), (r) => this.trigger(r)))
    if (this.options.gce) this.stops.push(watchGce(opts(this.options.gce), (r) => this.trigger(r)))
    if (this.options.azure) this.stops.push(pollAzure(opts(this.options.azure), (r) => this.trigger(r)))
    return this
  }

  stop(): void {
    for (const s of this.stops.splice(0)) s()
  }

  /** Announces preemption (idempotent). */
  trigger(reason: string): void {
    if (this.reasonText !== undefined) return
    this.reasonText = reason
    this.controller.abort(new PreemptedError(reason))
    this.hooksDone = Promise.all([...this.hooks].map((h) => runHook(h, reason))).then(() => {})
  }
}

async function runHook(h: Hook, reason: string): Promise<void> {
  try {
    await h(reason)
  } catch (e) {
    console.error(`[taskpoint] a preemption hook failed: ${(e as Error).message}`)
  }
}

function opts(o: boolean | MetadataPollOptions): MetadataPollOptions {
  return typeof o === 'object' ? o : {}
}

/** Calls `tick` now and every `ms` until stopped; the timer never keeps the process alive. */
function every(ms: number, tick: (signal: AbortSignal) => Promise<boolean>): () => void {
  const ac = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const loop = async (): Promise<void> => {
    if (ac.signal.aborted) return
    const done = await tick(ac.signal).catch(() => false)
    if (!done && !ac.signal.aborted) {
      timer = setTimeout(loop, ms)
      timer.unref()
    }
  }
  void loop()
  return () => {
    ac.abort()
    clearTimeout(timer)
  }
}

function pollAws(o: MetadataPollOptions, fire: (r: string) => void): () => void {
  const base = (o.baseUrl ?? 'http://169.254.169.254').replace(/\/$/, '')
  return every(o.intervalMs ?? 5000, async (signal) => {
    const t = AbortSignal.any([signal, AbortSignal.timeout(2000)])
    const tok = await fetch(`${base}/latest/api/token`, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '300' }, signal: t })
    if (!tok.ok) return false
    const token = await tok.text()
    const res = await fetch(`${base}/latest/meta-data/spot/instance-action`, { headers: { 'X-aws-ec2-metadata-token': token }, signal: t })
    if (res.status !== 200) return false
    const body = (await res.json().catch(() => ({}))) as { action?: string; time?: string }
    fire(`EC2 spot interruption notice: ${body.action ?? 'terminate'} at ${body.time ?? 'soon'}`)
    return true
  })
}

function watchGce(o: MetadataPollOptions, fire: (r: string) => void): () => void {
  const base = (o.baseUrl ?? 'http://metadata.google.internal').replace(/\/$/, '')
  return every(o.intervalMs ?? 1000, async (signal) => {
    // wait_for_change holds the request open until the value changes: a notice arrives at once.
    const res = await fetch(`${base}/computeMetadata/v1/instance/preempted?wait_for_change=true`, { headers: { 'Metadata-Flavor': 'Google' }, signal })
    if (!res.ok) return false
    if ((await res.text()).trim().toUpperCase() !== 'TRUE') return false
    fire('GCE preemption notice (instance/preempted = TRUE)')
    return true
  })
}

function pollAzure(o: MetadataPollOptions, fire: (r: string) => void): () => void {
  const base = (o.baseUrl ?? 'http://169.254.169.254').replace(/\/$/, '')
  return every(o.intervalMs ?? 5000, async (signal) => {
    const res = await fetch(`${base}/metadata/scheduledevents?api-version=2020-07-01`, {
      headers: { Metadata: 'true' },
      signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]),
    })
    if (!res.ok) return false
    const body = (await res.json()) as { Events?: { EventType?: string; NotBefore?: string }[] }
    const ev = body.Events?.find((e) => e.EventType === 'Preempt')
    if (!ev) return false
    fire(`Azure scheduled event Preempt (not before ${ev.NotBefore ?? 'soon'})`)
    return true
  })
}
