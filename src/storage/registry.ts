import type { DriverOptionsBase, StorageDriver } from './driver.js'

/** A registry line: the URI schemes a driver serves and how to load its module on first use. */
export interface DriverEntry {
  readonly schemes: readonly string[]
  readonly load: () => Promise<{ driver: StorageDriver<never> }>
}

/**
 * Every built-in driver, one line each. Adding a backend is its driver file plus one line here;
 * openStorage, the URI parser and the per-driver options of `OpenStorageOptions` follow from it.
 * Local disk also takes plain paths (no scheme).
 */
export const builtinDrivers = {
  local: { schemes: ['file'], load: () => import('./local.js') },
  s3: { schemes: ['s3'], load: () => import('./s3.js') },
  gcs: { schemes: ['gs'], load: () => import('./gcs.js') },
} as const satisfies Record<string, DriverEntry>

export type DriverName = keyof typeof builtinDrivers

type OptionsOf<D> = D extends StorageDriver<infer O> ? O : never

type ModuleOf<K extends DriverName> = Awaited<ReturnType<(typeof builtinDrivers)[K]['load']>>

/** Each driver's own options, keyed by driver name, derived from the registry. */
export type DriverOptions = {
  [K in DriverName]: ModuleOf<K> extends { driver: infer D } ? OptionsOf<D> : never
}

/** The driver serving a URI scheme ('s3', 'gs', 'file'), or undefined. */
export function driverForScheme(scheme: string): DriverName | undefined {
  for (const [name, entry] of Object.entries(builtinDrivers) as [DriverName, DriverEntry][]) {
    if (entry.schemes.includes(scheme)) return name
  }
  return undefined
}

/** Every URI scheme a driver serves, for error messages. */
export function knownSchemes(): string[] {
  return Object.values<DriverEntry>(builtinDrivers).flatMap((entry) => [...entry.schemes])
}

export async function loadDriver(name: DriverName): Promise<StorageDriver<DriverOptionsBase>> {
  const { driver } = await (builtinDrivers[name] as DriverEntry).load()
  return driver as StorageDriver<DriverOptionsBase>
}
