import { describe, expect, it } from 'vitest'
import { PreemptedError, PreemptionWatcher } from '../../src/index.js'
import { StopOnPreemption } from '../../src/runtime/stop-on-preemption.js'

// The protocol's inputs are real: an AbortSignal from a PreemptionWatcher (or a plain
// AbortController), and save/stop/flush functions that record what the protocol asked for.
function setup(signal: AbortSignal | undefined, save: () => Promise<void> = async () => {}) {
  const events: string[] = []
  const protocol = new StopOnPreemption({
    signal,
    save: async () => {
      events.push('save')
      await save()
      events.push('saved')
    },
    stop: () => void events.push('stop'),
    flush: async () => void events.push('flush'),
  })
  return { protocol, events }
}

const turn = () => new Promise((r) => setImmediate(r))

describe('StopOnPreemption', () => {
  it('does nothing while the signal is not aborted, or when there is no signal', async () => {
    for (const signal of [new AbortController().signal, undefined]) {
      const { protocol, events } = setup(signal)
      expect(await protocol.atStep()).toBe(false)
      expect(await protocol.atStep(true)).toBe(false)
      expect(await protocol.atEpochEnd()).toBe(false)
      await protocol.settle()
      expect(events).toEqual(['flush'])
      expect(protocol.state).toBe('running')
    }
  })

  it('mid-epoch: stops and makes one save, durable before the step boundary returns; settle flushes, then throws', async () => {
    const watcher = new PreemptionWatcher()
    let release!: () => void
    const { protocol, events } = setup(watcher.signal, () => new Promise<void>((r) => (release = r)))
    expect(await protocol.atStep()).toBe(false)
    watcher.trigger('received SIGTERM')
    let returned = false
    const step = protocol.atStep().then((v) => ((returned = true), v))
    await turn()
    expect(events).toEqual(['stop', 'save'])
    expect(returned).toBe(false) // training must not go on before the save is durable
    release()
    expect(await step).toBe(true)
    expect(protocol.stopped).toBe(true)
    // Later boundaries (and the cut epoch's end) do not save again.
    expect(await protocol.atStep()).toBe(false)
    expect(await protocol.atEpochEnd()).toBe(false)
    const err = await protocol.settle().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(PreemptedError)
    expect((err as PreemptedError).reason).toBe('received SIGTERM')
    expect(events).toEqual(['stop', 'save', 'saved', 'flush'])
  })

  it("on an epoch's last step: stops at once, saves at the epoch end", async () => {
    const ac = new AbortController()
    const { protocol, events } = setup(ac.signal)
    ac.abort('no message') // a reason without a message: the error says what happened anyway
    expect(await protocol.atStep(true)).toBe(true)
    expect(events).toEqual(['stop'])
    expect(protocol.state).toBe('epochEnd')
    expect(protocol.stopped).toBe(false) // the epoch end's bookkeeping must still run
    expect(await protocol.atEpochEnd()).toBe(true)
    expect(events).toEqual(['stop', 'stop', 'save', 'saved'])
    expect(protocol.stopped).toBe(true)
    expect(() => protocol.throwIfStopped()).toThrow(/preempted: training stopped by preemption/)
  })

  it('a preemption that arrives after the last step is handled at the epoch end', async () => {
    const ac = new AbortController()
    const { protocol, events } = setup(ac.signal)
    expect(await protocol.atStep(true)).toBe(false)
    ac.abort(new PreemptedError('GCE preemption notice'))
    expect(await protocol.atEpochEnd()).toBe(true)
    expect(events).toEqual(['stop', 'save', 'saved'])
    expect(() => protocol.throwIfStopped()).toThrow(expect.objectContaining({ reason: 'GCE preemption notice' }))
  })

  it('a failed last save propagates, and training still counts as stopped', async () => {
    const ac = new AbortController()
    ac.abort()
    const { protocol } = setup(ac.signal, async () => {
      throw new Error('disk full')
    })
    await expect(protocol.atStep()).rejects.toThrow('disk full')
    expect(protocol.stopped).toBe(true)
    await expect(protocol.settle()).rejects.toBeInstanceOf(PreemptedError)
  })
})
