import http from 'node:http'
import type { AddressInfo } from 'node:net'

export type Fault = 'status500' | 'status503' | 'reset' | 'stall'

export interface FaultProxy {
  url: string
  /** Queue faults; each one is used by the next request matching `match` (default: any). */
  inject(faults: Fault[], match?: (req: http.IncomingMessage) => boolean): void
  /** Faults served so far, by kind. */
  served: Record<Fault, number>
  /** Requests forwarded to the real server. */
  forwarded: number
  close(): Promise<void>
}

/**
 * An HTTP proxy on 127.0.0.1 between an SDK and a test server that answers chosen requests with a
 * fault instead of forwarding them: a 5xx, a connection reset, or a stall that never answers.
 */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const t = new URL(target)
  const queue: { fault: Fault; match: (req: http.IncomingMessage) => boolean }[] = []
  const stalled = new Set<http.ServerResponse>()
  const proxy: FaultProxy = {
    url: '',
    served: { status500: 0, status503: 0, reset: 0, stall: 0 },
    forwarded: 0,
    inject(faults, match = () => true) {
      for (const fault of faults) queue.push({ fault, match })
    },
    async close() {
      for (const r of stalled) r.destroy()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    },
  }
  const server = http.createServer((req, res) => {
    const i = queue.findIndex((q) => q.match(req))
    if (i >= 0) {
      const { fault } = queue.splice(i, 1)[0]!
      proxy.served[fault]++
      if (fault === 'reset') {
        req.socket.destroy()
        return
      }
      if (fault === 'stall') {
        stalled.add(res)
        req.resume()
        return
      }
      req.resume()
      req.on('end', () => {
        const code = fault === 'status500' ? 500 : 503
        res.writeHead(code, { 'content-type': 'application/xml', connection: 'close' })
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code === 500 ? 'InternalError' : 'SlowDown'}</Code><Message>injected fault</Message></Error>`)
      })
      return
    }
    proxy.forwarded++
    const up = http.request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers)
        ur.pipe(res)
      },
    )
    up.on('error', () => res.destroy())
    req.pipe(up)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return proxy
}
