import http from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * Faults the proxy can inject into one matched request:
 * - `status500` / `status503`: answered by the proxy, never forwarded (a 5xx the server "sent").
 * - `reset`: the client's connection is destroyed before anything is forwarded.
 * - `stall`: the request is swallowed and never answered (until the proxy closes).
 * - `closeEarly`: forwarded; the response headers go out with the full Content-Length, then the
 *   socket is destroyed after `keep` body bytes (a body that ends early).
 * - `truncate`: forwarded; only `keep` body bytes are sent with a Content-Length that matches them
 *   (a short response that looks complete at the HTTP level).
 * - `corrupt`: forwarded; one body byte (at `at`) is flipped, the length kept.
 * - `loseResponse`: forwarded and completed by the server (it acts), then the client's socket is
 *   destroyed before any of the response reaches it.
 */
export type FaultKind = 'status500' | 'status503' | 'reset' | 'stall' | 'closeEarly' | 'truncate' | 'corrupt' | 'loseResponse'
/** Kept for callers of the first version of this module. */
export type Fault = FaultKind

export type Matcher = (req: http.IncomingMessage) => boolean

export interface FaultOptions {
  /** closeEarly / truncate: body bytes let through. A number < 1 is a fraction of the body. Default 0.5. */
  keep?: number
  /** corrupt: index of the flipped byte. A number < 1 is a fraction of the body. Default 0.5. */
  at?: number
}

export interface FaultProxyOptions {
  /**
   * Answer 412 to a conditional create (S3 `If-None-Match: *` on PutObject/CompleteMultipartUpload;
   * GCS `ifGenerationMatch=0` on simple and resumable uploads) of a key that exists upstream,
   * which neither test server does itself. Conditional creates of one key are serialised so that
   * racing writers see exactly one winner. Default false; can be changed later on the proxy.
   */
  enforceConditionalCreates?: boolean
}

export interface FaultProxy {
  url: string
  /** Queue faults; each one is used once, by the next request that `match` accepts (default: any). */
  inject(faults: FaultKind | FaultKind[], match?: Matcher, options?: FaultOptions): void
  /** Drops faults still queued (e.g. ones a test's requests never matched). Returns how many. */
  clearFaults(): number
  /** Faults not yet used. */
  readonly pending: number
  /** Faults used so far, by kind. */
  served: Record<FaultKind, number>
  /** Requests forwarded to the real server (faults that forward count too). */
  forwarded: number
  /** Conditional creates refused with 412 because the key existed. */
  preconditionFailed: number
  /** Conditional creates seen (refused or forwarded). */
  conditionalCreates: number
  enforceConditionalCreates: boolean
  /** Every request received, as it arrived (method, path with query, headers), faulted or not. */
  readonly requests: { method: string; path: string; headers: http.IncomingHttpHeaders }[]
  close(): Promise<void>
}

type Flavor = 's3' | 'gcs'

// GCS JSON API paths; anything else is treated as S3 (path-style addressing).
const flavorOf = (path: string): Flavor => (/^\/(upload\/|download\/)?storage\/v1\//.test(path) ? 'gcs' : 's3')

function urlOf(req: http.IncomingMessage): URL {
  return new URL(req.url ?? '/', 'http://proxy')
}

/** Common matchers; combine with `&&` in a lambda. */
export const match = {
  method:
    (m: string): Matcher =>
    (req) =>
      req.method === m,
  pathIncludes:
    (s: string): Matcher =>
    (req) =>
      decodeURIComponent(urlOf(req).pathname + urlOf(req).search).includes(s),
  /** An object download: S3 GET of an object, GCS `alt=media`. */
  download: ((req) => {
    const u = urlOf(req)
    if (req.method !== 'GET') return false
    if (flavorOf(u.pathname) === 'gcs') return u.searchParams.get('alt') === 'media'
    return !u.searchParams.has('list-type') && u.pathname.split('/').filter(Boolean).length >= 2
  }) as Matcher,
  /** One page of a listing: S3 ListObjectsV2, GCS objects.list. */
  list: ((req) => {
    const u = urlOf(req)
    if (req.method !== 'GET') return false
    if (flavorOf(u.pathname) === 'gcs') return /^\/storage\/v1\/b\/[^/]+\/o\/?$/.test(u.pathname)
    return u.searchParams.has('list-type')
  }) as Matcher,
  /** The request that makes an object exist: S3 PutObject/CompleteMultipartUpload, GCS simple upload or final resumable PUT. */
  finalUpload: ((req) => {
    const u = urlOf(req)
    if (flavorOf(u.pathname) === 'gcs') {
      if (!u.pathname.startsWith('/upload/')) return false
      return (req.method === 'POST' && u.searchParams.get('uploadType') === 'multipart') || (req.method === 'PUT' && u.searchParams.has('upload_id'))
    }
    return (req.method === 'PUT' && !u.searchParams.has('partNumber') && !req.headers['x-amz-copy-source']) || (req.method === 'POST' && u.searchParams.has('uploadId'))
  }) as Matcher,
  /** GCS object metadata GET (no `alt=media`). */
  gcsMetadata: ((req) => {
    const u = urlOf(req)
    return req.method === 'GET' && /^\/storage\/v1\/b\/[^/]+\/o\/.+/.test(u.pathname) && u.searchParams.get('alt') !== 'media'
  }) as Matcher,
}

/** What a conditional create targets, and how to ask the server whether it exists. */
interface CondTarget {
  id: string
  existsPath: string
  flavor: Flavor
}

/**
 * An HTTP proxy on 127.0.0.1 between an SDK and a test server (fauxqs or the GCS emulator) that
 * injects faults into chosen requests and can enforce conditional creates. It never changes a
 * request it forwards; it only drops, delays, cuts or damages the traffic, or refuses a create.
 */
export async function startFaultProxy(target: string, options: FaultProxyOptions = {}): Promise<FaultProxy> {
  const t = new URL(target)
  const queue: { fault: FaultKind; match: Matcher; o: FaultOptions }[] = []
  const open = new Set<http.ServerResponse>()
  /** GCS resumable sessions opened with ifGenerationMatch=0: upload_id -> target. */
  const condSessions = new Map<string, CondTarget>()
  /** Per-key chains serialising conditional creates (check + forward as one step). */
  const keyLocks = new Map<string, Promise<void>>()

  const proxy: FaultProxy = {
    url: '',
    served: { status500: 0, status503: 0, reset: 0, stall: 0, closeEarly: 0, truncate: 0, corrupt: 0, loseResponse: 0 },
    forwarded: 0,
    preconditionFailed: 0,
    conditionalCreates: 0,
    enforceConditionalCreates: options.enforceConditionalCreates ?? false,
    requests: [],
    get pending() {
      return queue.length
    },
    inject(faults, m = () => true, o = {}) {
      for (const fault of Array.isArray(faults) ? faults : [faults]) queue.push({ fault, match: m, o })
    },
    clearFaults() {
      return queue.splice(0).length
    },
    async close() {
      for (const r of open) r.destroy()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    },
  }

  function condTarget(req: http.IncomingMessage): CondTarget | undefined {
    const u = urlOf(req)
    if (flavorOf(u.pathname) === 'gcs') {
      if (req.method === 'PUT' && u.searchParams.has('upload_id')) return condSessions.get(u.searchParams.get('upload_id')!)
      const m = /^\/upload\/storage\/v1\/b\/([^/]+)\/o\/?$/.exec(u.pathname)
      const name = u.searchParams.get('name')
      if (req.method !== 'POST' || !m || name === null || u.searchParams.get('ifGenerationMatch') !== '0') return undefined
      return { id: `gcs:${m[1]}/${name}`, existsPath: `/storage/v1/b/${m[1]}/o/${encodeURIComponent(name)}`, flavor: 'gcs' }
    }
    if (req.headers['if-none-match'] !== '*') return undefined
    const isPut = req.method === 'PUT' && !u.searchParams.has('partNumber')
    const isComplete = req.method === 'POST' && u.searchParams.has('uploadId')
    if (!isPut && !isComplete) return undefined
    return { id: `s3:${u.pathname}`, existsPath: u.pathname, flavor: 's3' }
  }

  function upstreamExists(c: CondTarget): Promise<boolean> {
    return new Promise((resolve, reject) => {
      const r = http.request({ host: t.hostname, port: t.port, method: c.flavor === 's3' ? 'HEAD' : 'GET', path: c.existsPath }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode === 200))
      })
      r.on('error', reject)
      r.end()
    })
  }

  async function withKeyLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = keyLocks.get(id) ?? Promise.resolve()
    let release!: () => void
    const mine = new Promise<void>((r) => (release = r))
    const chain = prev.then(() => mine)
    keyLocks.set(id, chain)
    await prev
    try {
      return await fn()
    } finally {
      release()
      if (keyLocks.get(id) === chain) keyLocks.delete(id)
    }
  }

  function refuse412(req: http.IncomingMessage, res: http.ServerResponse, flavor: Flavor): void {
    proxy.preconditionFailed++
    req.resume()
    req.on('end', () => {
      if (flavor === 's3') {
        res.writeHead(412, { 'content-type': 'application/xml' })
        res.end(
          '<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-None-Match</Condition></Error>',
        )
      } else {
        const body = {
          error: {
            code: 412,
            message: 'At least one of the pre-conditions you specified did not hold.',
            errors: [{ reason: 'conditionNotMet', message: 'At least one of the pre-conditions you specified did not hold.' }],
          },
        }
        res.writeHead(412, { 'content-type': 'application/json; charset=UTF-8' })
        res.end(JSON.stringify(body))
      }
    })
  }

  function answerStatus(req: http.IncomingMessage, res: http.ServerResponse, code: 500 | 503): void {
    req.resume()
    req.on('end', () => {
      if (flavorOf(urlOf(req).pathname) === 'gcs') {
        res.writeHead(code, { 'content-type': 'application/json; charset=UTF-8', connection: 'close' })
        res.end(JSON.stringify({ error: { code, message: 'injected fault', errors: [{ reason: 'backendError', message: 'injected fault' }] } }))
      } else {
        res.writeHead(code, { 'content-type': 'application/xml', connection: 'close' })
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code === 500 ? 'InternalError' : 'SlowDown'}</Code><Message>injected fault</Message></Error>`)
      }
    })
  }

  /** Forwards to the server; `fault` (if any) shapes what the client gets back. Resolves when done. */
  function forward(req: http.IncomingMessage, res: http.ServerResponse, fault?: { kind: FaultKind; o: FaultOptions }): Promise<void> {
    proxy.forwarded++
    return new Promise<void>((done) => {
      const up = http.request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } }, (ur) => {
        // Remember GCS resumable sessions opened with a create-if-absent condition.
        const u = urlOf(req)
        if (req.method === 'POST' && u.searchParams.get('uploadType') === 'resumable' && u.searchParams.get('ifGenerationMatch') === '0') {
          const loc = ur.headers.location
          const c = condTarget(req)
          const id = loc ? new URL(loc, 'http://x').searchParams.get('upload_id') : null
          if (id && c) condSessions.set(id, c)
        }
        // The GCS emulator points resumable sessions at itself: keep them going through the proxy.
        if (typeof ur.headers.location === 'string' && ur.headers.location.startsWith(t.origin)) {
          ur.headers.location = proxy.url + ur.headers.location.slice(t.origin.length)
        }
        const kind = fault?.kind
        if (kind === undefined) {
          res.writeHead(ur.statusCode ?? 502, ur.headers)
          ur.pipe(res)
          ur.on('end', () => done())
          ur.on('error', () => done())
          return
        }
        const parts: Buffer[] = []
        ur.on('data', (c: Buffer) => parts.push(c))
        ur.on('error', () => {
          res.destroy()
          done()
        })
        ur.on('end', () => {
          const body = Buffer.concat(parts)
          const pos = (v: number | undefined): number => {
            const x = v ?? 0.5
            return Math.max(0, Math.min(body.length, x < 1 ? Math.floor(body.length * x) : Math.floor(x)))
          }
          const headers = { ...ur.headers }
          delete headers['transfer-encoding']
          const status = ur.statusCode ?? 502
          if (kind === 'loseResponse') {
            // The server has acted; the client never hears about it.
            req.socket.destroy()
          } else if (kind === 'closeEarly') {
            res.writeHead(status, { ...headers, 'content-length': String(body.length) })
            res.write(body.subarray(0, Math.min(pos(fault!.o.keep), Math.max(0, body.length - 1))), () => {
              res.destroy()
              req.socket.destroy()
            })
          } else if (kind === 'truncate') {
            const short = body.subarray(0, Math.min(pos(fault!.o.keep), Math.max(0, body.length - 1)))
            res.writeHead(status, { ...headers, 'content-length': String(short.length) })
            res.end(short)
          } else {
            // corrupt
            const copy = Buffer.from(body)
            if (copy.length > 0) {
              const i = Math.min(pos(fault!.o.at), copy.length - 1)
              copy[i] = copy[i]! ^ 0x5a
            }
            res.writeHead(status, { ...headers, 'content-length': String(copy.length) })
            res.end(copy)
          }
          done()
        })
      })
      up.on('error', () => {
        res.destroy()
        done()
      })
      req.pipe(up)
    })
  }

  const server = http.createServer((req, res) => {
    proxy.requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers })
    open.add(res)
    res.on('close', () => open.delete(res))
    const i = queue.findIndex((q) => q.match(req))
    const taken = i >= 0 ? queue.splice(i, 1)[0]! : undefined
    if (taken) proxy.served[taken.fault]++
    const kind = taken?.fault
    if (kind === 'reset') return void req.socket.destroy()
    if (kind === 'stall') return void req.resume()
    if (kind === 'status500' || kind === 'status503') return answerStatus(req, res, kind === 'status500' ? 500 : 503)
    const fault = taken ? { kind: taken.fault, o: taken.o } : undefined
    const cond = condTarget(req)
    if (cond) proxy.conditionalCreates++
    if (!cond || !proxy.enforceConditionalCreates) return void forward(req, res, fault)
    // Check and create under one per-key lock, so that two racing creates cannot both pass.
    void withKeyLock(cond.id, async () => {
      let exists: boolean
      try {
        exists = await upstreamExists(cond)
      } catch {
        res.destroy()
        return
      }
      if (exists) return refuse412(req, res, cond.flavor)
      await forward(req, res, fault)
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return proxy
}
