// Runs a local fleet of worker processes for the demo, the benchmark and the tests: N slots, each
// holding one worker process; a worker that exits (preempted, killed) is replaced by a new one in
// its slot, as an autoscaling group replaces a reclaimed spot machine.
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseEvents, type FleetEvent } from './events.js'

const workerScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker.js')

export type Event = FleetEvent & { t: number; worker: string }

export interface FleetOptions {
  workers: number
  redisUrl: string
  /** Checkpoint base shared by the workers. */
  checkpoint: string
  queue: string
  /** Environment for the workers (storage endpoint and credentials). */
  env?: Record<string, string>
  /** Extra worker arguments (--lock-ms, --stalled-ms, --no-checkpoints, …). */
  args?: string[]
  /** Every event, as it arrives. */
  onEvent?: (e: Event) => void
  /** Other output lines of the workers. */
  onLine?: (worker: string, line: string) => void
}

interface Slot {
  index: number
  generation: number
  child?: ChildProcess
  name: string
}

export class Fleet {
  readonly events: Event[] = []
  private readonly slots: Slot[] = []
  private running = true
  private readonly exits = new Set<Promise<void>>()

  constructor(private readonly o: FleetOptions) {
    for (let i = 0; i < o.workers; i++) this.slots.push({ index: i, generation: 0, name: '' })
  }

  start(): void {
    for (const s of this.slots) this.spawn(s)
  }

  /** The worker process currently in each slot (name), for picking a victim. */
  get current(): { slot: number; name: string; alive: boolean }[] {
    return this.slots.map((s) => ({ slot: s.index, name: s.name, alive: !!s.child && s.child.exitCode === null && s.child.signalCode === null }))
  }

  /** Sends `signal` to the worker process called `name` (if it is still alive). */
  kill(name: string, signal: NodeJS.Signals): boolean {
    const s = this.slots.find((x) => x.name === name)
    if (!s?.child || s.child.exitCode !== null || s.child.signalCode !== null) return false
    this.record({ ev: 'kill', worker: name, signal, t: Date.now() })
    return s.child.kill(signal)
  }

  /** Stops every worker (SIGTERM: they requeue what they hold) and waits for them. */
  async stop(): Promise<void> {
    this.running = false
    for (const s of this.slots) s.child?.kill('SIGTERM')
    while (this.exits.size > 0) await Promise.all([...this.exits])
  }

  private record(e: Event): void {
    this.events.push(e)
    this.o.onEvent?.(e)
  }

  private spawn(s: Slot): void {
    s.generation++
    s.name = `w${s.index + 1}.${s.generation}`
    const child = spawn(
      process.execPath,
      [workerScript, '--redis', this.o.redisUrl, '--checkpoint', this.o.checkpoint, '--queue', this.o.queue, '--name', s.name, ...(this.o.args ?? [])],
      {
        env: { ...process.env, ...this.o.env, FLEET_WORKER_NAME: s.name },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    s.child = child
    const name = s.name
    createInterface({ input: child.stderr! }).on('line', (line) => {
      for (const e of parseEvents(line, (l) => this.o.onLine?.(name, l))) this.record(e)
    })
    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        this.record({ ev: 'exit', worker: name, code, signal, t: Date.now() })
        this.exits.delete(exited)
        // The machine is replaced; its successor joins the fleet.
        if (this.running) this.spawn(s)
        resolve()
      })
    })
    this.exits.add(exited)
  }
}

/** Resolves when every job in `ids` is completed or failed (polled; nothing is inferred from timing). */
export async function waitForJobs(
  queue: { getJob(id: string): Promise<{ getState(): Promise<string> } | undefined> },
  ids: string[],
  timeoutMs = 10 * 60_000,
): Promise<Record<string, string>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const states: Record<string, string> = {}
    for (const id of ids) states[id] = (await (await queue.getJob(id))?.getState()) ?? 'missing'
    if (Object.values(states).every((s) => s === 'completed' || s === 'failed')) return states
    if (Date.now() > deadline) throw new Error(`jobs not finished after ${timeoutMs} ms: ${JSON.stringify(states)}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}
