import { PreemptedError } from './errors.js'

// The preemption protocol of every training integration (tfjs today; a plain loop, ONNX or
// transformers.js next): once the signal is aborted, the next step boundary makes one last save,
// durable before anything else happens, and training stops; when the loop has returned, pending
// saves are flushed and the run ends with PreemptedError, so runMain exits with the preemption
// status and the engine resumes from that save. The integration supplies the framework's verbs.

export interface StopOnPreemptionOptions {
  /** Aborted when the machine is going away (a task's `signal`). Undefined: never preempted. */
  signal: AbortSignal | undefined
  /** The last save. Must resolve only once it is durable: the process may be killed right after. */
  save: () => Promise<void>
  /** Asks the training loop to stop after the current step (tfjs: `model.stopTraining = true`). */
  stop: () => void
  /** Waits for every earlier (background) save; its errors surface here. */
  flush: () => Promise<void>
}

/** Where the protocol stands. `epochEnd`: preempted on an epoch's last step, the save waits for the epoch end. */
export type StopState = 'running' | 'epochEnd' | 'stopped'

export class StopOnPreemption {
  #state: StopState = 'running'

  constructor(private readonly options: StopOnPreemptionOptions) {}

  get state(): StopState {
    return this.#state
  }

  /** The last save has been started: training was cut short and must not be reported as finished. */
  get stopped(): boolean {
    return this.#state === 'stopped'
  }

  /**
   * At a step boundary (the step's update applied). `epochEndFollows`: this was its epoch's last
   * step and the epoch-end bookkeeping (history, validation) is still to run, so the save moves
   * there (`atEpochEnd`). Returns true when preemption took this boundary over: the caller makes
   * no regular save here.
   */
  async atStep(epochEndFollows = false): Promise<boolean> {
    if (!this.options.signal?.aborted || this.#state === 'stopped') return false
    this.options.stop()
    if (epochEndFollows) {
      this.#state = 'epochEnd'
      return true
    }
    this.#state = 'stopped'
    await this.options.save()
    return true
  }

  /**
   * At an epoch end, after its bookkeeping: saves and stops if preemption was deferred here or
   * arrived since the last step. Returns true when it did (the caller makes no regular save).
   */
  async atEpochEnd(): Promise<boolean> {
    if (this.#state === 'stopped') return false
    if (this.#state !== 'epochEnd' && !this.options.signal?.aborted) return false
    this.#state = 'stopped'
    this.options.stop()
    await this.options.save()
    return true
  }

  /** Throws PreemptedError if training was stopped (without waiting for other saves). */
  throwIfStopped(): void {
    if (this.stopped) throw new PreemptedError(this.reason())
  }

  /** After the loop returned: waits for every save, then throws PreemptedError if training was stopped. */
  async settle(): Promise<void> {
    await this.options.flush()
    this.throwIfStopped()
  }

  private reason(): string {
    // The watcher aborts with a PreemptedError whose message is already "preempted: <why>".
    const r = this.options.signal?.reason as { message?: unknown } | undefined
    return typeof r?.message === 'string' ? r.message.replace(/^preempted: /, '') : 'training stopped by preemption'
  }
}
