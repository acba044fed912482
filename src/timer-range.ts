// A timer (setTimeout, setInterval) takes at most this many ms: a longer delay, or Infinity, fires
// after 1 ms instead. Every delay an option sets is checked against it.
export const MAX_TIMER_MS = 2 ** 31 - 1

/** Whether `ms` is a delay a timer holds as given: a number from 0 to MAX_TIMER_MS. */
export function isTimerMs(ms: unknown): ms is number {
  return typeof ms === 'number' && ms >= 0 && ms <= MAX_TIMER_MS
}
