import { AsyncLocalStorage } from 'node:async_hooks'

/**
 * Marks code that runs on taskpoint's behalf (storage operations and what the SDKs do inside them).
 * The cloud SDKs call Math.random (async-retry precomputes jittered timeouts on every GCS request;
 * the AWS SDK on retries). A seeded Math.random that training depends on (taskpoint/tfjs
 * `seedRandom`) must not be consumed by that background work at unpredictable moments, so it
 * serves calls inside this scope from the original generator instead.
 *
 * One instance per process, shared through a global symbol, so that two copies of taskpoint (or the
 * core and an integration bundled apart) still agree.
 */
const KEY = Symbol.for('taskpoint.ioScope')
const g = globalThis as unknown as Record<symbol, AsyncLocalStorage<true> | undefined>
const ioScope: AsyncLocalStorage<true> = (g[KEY] ??= new AsyncLocalStorage<true>())

export function inIoScope(): boolean {
  return ioScope.getStore() === true
}

export function runInIoScope<T>(fn: () => T): T {
  return ioScope.run(true, fn)
}
