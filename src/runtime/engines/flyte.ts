// Flyte's raw-container contract (see flytekit's pyflyte-execute and propeller's template
// rendering): checkpoint prefixes come in as arguments, and failures are reported as a binary
// `flyteidl.core.ErrorDocument` written to `<outputPrefix>/error.pb`, with exit status 0.

/** True when Flyte left a template value unrendered or empty (its "no previous checkpoint"). */
export function isEmptyFlyteValue(v: string | undefined): boolean {
  if (v === undefined) return true
  const t = v.trim()
  return t === '' || t === '""' || t === "''" || /^\{\{\s*\.\w+\s*\}\}$/.test(t)
}

export enum ErrorKind {
  NON_RECOVERABLE = 0,
  RECOVERABLE = 1,
}
export enum ErrorOrigin {
  UNKNOWN = 0,
  USER = 1,
  SYSTEM = 2,
}

export interface ContainerError {
  code: string
  message: string
  kind: ErrorKind
  origin: ErrorOrigin
  /** When the error happened (google.protobuf.Timestamp, field 5). */
  timestamp?: Date
  /** Which worker (field 6). */
  worker?: string
}

// Protobuf wire format, just the parts ErrorDocument needs: varints, length-delimited fields.
function varint(n: number): number[] {
  const out: number[] = []
  let v = BigInt(n)
  do {
    let b = Number(v & 0x7fn)
    v >>= 7n
    if (v > 0n) b |= 0x80
    out.push(b)
  } while (v > 0n)
  return out
}
const tag = (field: number, wire: number): number[] => varint((field << 3) | wire)
function bytesField(field: number, payload: Uint8Array): number[] {
  return [...tag(field, 2), ...varint(payload.length), ...payload]
}
function varintField(field: number, v: number): number[] {
  return v === 0 ? [] : [...tag(field, 0), ...varint(v)] // proto3: defaults are not written
}

/** Encodes `ErrorDocument { error: ContainerError }` (flyteidl/core/errors.proto). */
export function encodeErrorDocument(e: ContainerError): Uint8Array {
  const enc = new TextEncoder()
  const ce: number[] = [...bytesField(1, enc.encode(e.code)), ...bytesField(2, enc.encode(e.message)), ...varintField(3, e.kind), ...varintField(4, e.origin)]
  if (e.timestamp) {
    const ms = e.timestamp.getTime()
    const ts = [...varintField(1, Math.floor(ms / 1000)), ...varintField(2, (ms % 1000) * 1_000_000)]
    ce.push(...bytesField(5, Uint8Array.from(ts)))
  }
  if (e.worker) ce.push(...bytesField(6, enc.encode(e.worker)))
  return Uint8Array.from(bytesField(1, Uint8Array.from(ce)))
}
