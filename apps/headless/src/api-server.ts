/**
 * The node's local HTTP API: `/healthz`, Prometheus `/metrics`, the control RPC at `POST /api/rpc` (JSON,
 * bearer token), live events at `GET /api/events` (server-sent events), and the web dashboard's static files.
 * It listens on loopback by default; every `/api/*` call needs the token kept in the data dir (the machine's
 * owner can read it; the dashboard URL printed at start carries it).
 */
import { timingSafeEqual } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { RpcRegistry } from '@meshrun/core/node/rpc-registry.ts';
import { fromJsonText, RPC_ERRORS, toJsonText } from '@meshrun/protocol';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

/** Largest request body accepted on /api/rpc (a WASM module travels inside a `run` request). */
export const MAX_API_BODY_BYTES = 8 * 1024 * 1024;
/** Concurrent event-stream clients; more are refused so a leaky dashboard tab cannot pile up. */
export const MAX_EVENT_CLIENTS = 64;

export interface ApiEvent {
  event: 'status' | 'task' | 'log' | 'event';
  data: unknown;
}

export interface ApiServerOptions {
  host: string;
  port: number;
  token: string;
  rpc: RpcRegistry;
  metrics: Registry;
  health: () => Record<string, unknown>;
  dashboardDir?: string;
  log: Logger;
}

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.ico': 'image/x-icon',
};

export class ApiServer {
  readonly #opts: ApiServerOptions;
  readonly #server: http.Server;
  readonly #clients = new Set<http.ServerResponse>();

  constructor(opts: ApiServerOptions) {
    this.#opts = opts;
    this.#server = http.createServer((req, res) => {
      this.#handle(req, res).catch((err) => {
        opts.log.error({ err: (err as Error).message }, 'api request failed');
        if (!res.headersSent)
          this.#json(res, 500, {
            ok: false,
            error: { code: RPC_ERRORS.internal, message: 'internal error' },
          });
        else res.destroy();
      });
    });
    this.#server.headersTimeout = 10_000;
    this.#server.requestTimeout = 60_000;
  }

  async listen(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#opts.port, this.#opts.host, () => resolve());
    });
    return this.#server.address() as AddressInfo;
  }

  /** Sends a live event to every connected dashboard. */
  broadcast(evt: ApiEvent): void {
    if (this.#clients.size === 0) return; // a busy node emits several events per task: no JSON for nobody
    const frame = `event: ${evt.event}\ndata: ${toJsonText(evt.data)}\n\n`;
    for (const res of this.#clients) {
      // A client that cannot keep up is dropped rather than buffered without bound.
      if (res.writableLength > 1024 * 1024) {
        res.destroy();
        this.#clients.delete(res);
        continue;
      }
      res.write(frame);
    }
  }

  #authorized(req: http.IncomingMessage, url: URL): boolean {
    const header = req.headers.authorization ?? '';
    const given = header.startsWith('Bearer ') ? header.slice(7) : (url.searchParams.get('token') ?? '');
    const a = Buffer.from(given);
    const b = Buffer.from(this.#opts.token);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  #json(res: http.ServerResponse, status: number, body: unknown): void {
    const text = toJsonText(body);
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(text);
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method === 'GET' && url.pathname === '/healthz') {
      this.#json(res, 200, { status: 'ok', ...this.#opts.health() });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/metrics') {
      res.writeHead(200, { 'content-type': this.#opts.metrics.contentType });
      res.end(await this.#opts.metrics.metrics());
      return;
    }
    if (url.pathname.startsWith('/api/')) {
      if (!this.#authorized(req, url)) {
        this.#json(res, 401, {
          ok: false,
          error: { code: 'UNAUTHORIZED', message: 'missing or wrong API token' },
        });
        return;
      }
      if (req.method === 'POST' && url.pathname === '/api/rpc') return this.#rpc(req, res);
      if (req.method === 'GET' && url.pathname === '/api/events') return this.#events(req, res);
      this.#json(res, 404, { ok: false, error: { code: RPC_ERRORS.notFound, message: 'no such endpoint' } });
      return;
    }
    if (req.method === 'GET') return this.#static(url, res);
    this.#json(res, 405, {
      ok: false,
      error: { code: RPC_ERRORS.badRequest, message: 'method not allowed' },
    });
  }

  async #readBody(req: http.IncomingMessage): Promise<string | null> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_API_BODY_BYTES) return null;
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  async #rpc(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const text = await this.#readBody(req);
    if (text === null) {
      this.#json(res, 413, {
        ok: false,
        error: { code: RPC_ERRORS.badRequest, message: `body exceeds ${MAX_API_BODY_BYTES} bytes` },
      });
      req.destroy();
      return;
    }
    let body: { method?: unknown; params?: unknown; auth?: unknown };
    try {
      body = fromJsonText(text) as typeof body;
    } catch {
      this.#json(res, 400, {
        ok: false,
        error: { code: RPC_ERRORS.badRequest, message: 'body is not valid JSON' },
      });
      return;
    }
    if (!body || typeof body !== 'object' || typeof body.method !== 'string' || body.method.length > 64) {
      this.#json(res, 400, {
        ok: false,
        error: { code: RPC_ERRORS.badRequest, message: 'body must be {method, params}' },
      });
      return;
    }
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    const outcome = await this.#opts.rpc.dispatch(body.method, body.params, {
      via: 'local',
      auth: body.auth,
      signal: abort.signal,
    });
    if (outcome.kind === 'value') this.#json(res, 200, { ok: true, result: outcome.value });
    else if (outcome.kind === 'error') {
      const status =
        outcome.code === RPC_ERRORS.unknownMethod || outcome.code === RPC_ERRORS.notFound
          ? 404
          : outcome.code === RPC_ERRORS.internal
            ? 500
            : 400;
      this.#json(res, status, { ok: false, error: { code: outcome.code, message: outcome.message } });
    } else {
      // Streaming methods answer newline-delimited JSON: one {item} per line, then {end:true}.
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
      try {
        for await (const item of outcome.items) {
          if (abort.signal.aborted) break;
          res.write(`${toJsonText({ item })}\n`);
        }
        res.end(`${toJsonText({ end: true })}\n`);
      } catch (err) {
        res.end(
          `${toJsonText({ ok: false, error: { code: RPC_ERRORS.internal, message: (err as Error).message } })}\n`,
        );
      }
    }
  }

  #events(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.#clients.size >= MAX_EVENT_CLIENTS) {
      this.#json(res, 503, {
        ok: false,
        error: { code: RPC_ERRORS.unavailable, message: 'too many event clients' },
      });
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      connection: 'keep-alive',
    });
    res.write(': meshrun events\n\n');
    this.#clients.add(res);
    const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    req.on('close', () => {
      clearInterval(keepAlive);
      this.#clients.delete(res);
    });
  }

  #static(url: URL, res: http.ServerResponse): void {
    const root = this.#opts.dashboardDir;
    if (!root || !existsSync(root)) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('dashboard not built (run `npm run build -w apps/desktop`)\n');
      return;
    }
    const rel = url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname).replace(/^\/+/, '');
    const file = path.resolve(root, rel);
    if (!file.startsWith(path.resolve(root) + path.sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    res.writeHead(200, {
      'content-type': MIME[path.extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'content-security-policy':
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'",
    });
    createReadStream(file).pipe(res);
  }

  async close(): Promise<void> {
    for (const res of this.#clients) res.destroy();
    this.#clients.clear();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
