import { StorageConfigError, type StorageBackend } from '../errors.js'

/**
 * Checks of a driver's options, at open: a value out of range is a StorageConfigError naming the
 * option, not a misleading failure later (a page size of 0 made every listing come back empty, so
 * readers saw no checkpoints; a deadline of 0 failed every operation as "transient").
 */
export function optionChecks(backend: StorageBackend) {
  const fail = (name: string, want: string, got: unknown): never => {
    throw new StorageConfigError({ backend }, `${name} must be ${want}, got ${typeof got === 'string' ? JSON.stringify(got) : String(got)}`)
  }
  return {
    /** `value` (or `fallback` when undefined), a whole number from min to max. */
    whole(name: string, value: unknown, fallback: number, min: number, max: number, unit = ''): number {
      if (value === undefined) return fallback
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) fail(name, `a whole number${unit} from ${min} to ${max}`, value)
      return value as number
    },
    /** `value` (or `fallback` when undefined), a finite number from min to max. */
    number(name: string, value: unknown, fallback: number, min: number, max: number, unit = ''): number {
      if (value === undefined) return fallback
      if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) fail(name, `a number${unit} from ${min} to ${max}`, value)
      return value as number
    },
    boolean(name: string, value: unknown, fallback: boolean): boolean {
      if (value === undefined) return fallback
      if (typeof value !== 'boolean') fail(name, 'true or false', value)
      return value as boolean
    },
  }
}
