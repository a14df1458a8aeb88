import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { RpcError } from '../shared/api.ts';
import {
  RECONNECT_MAX_DELAY_MS,
  reconnectDelay,
  TOKEN_STORAGE_KEY,
  takeToken,
  WebBridge,
} from './web-bridge.ts';

/** Just enough of `window` for takeToken: location, history, sessionStorage. */
function fakeWindow(href: string) {
  const storage = new Map<string, string>();
  const win = {
    location: { href },
    history: {
      state: null,
      replaceState(_s: unknown, _t: string, url: string) {
        win.location.href = new URL(url, win.location.href).href;
      },
    },
    sessionStorage: {
      getItem: (k: string) => storage.get(k) ?? null,
      setItem: (k: string, v: string) => void storage.set(k, v),
    },
  };
  return win;
}

describe('takeToken', () => {
  it('moves the token from the URL to session storage and removes it from the address bar', () => {
    const win = fakeWindow('http://127.0.0.1:4800/?token=abc123&x=1#events');
    assert.equal(takeToken(win as unknown as Window), 'abc123');
    assert.equal(win.location.href, 'http://127.0.0.1:4800/?x=1#events');
    assert.equal(win.sessionStorage.getItem(TOKEN_STORAGE_KEY), 'abc123');
    // After a reload the URL has no token; the tab's session storage still has it.
    assert.equal(takeToken(win as unknown as Window), 'abc123');
  });
  it('returns null without a token anywhere', () => {
    assert.equal(takeToken(fakeWindow('http://127.0.0.1:4800/') as unknown as Window), null);
  });
});

describe('reconnectDelay', () => {
  it('grows exponentially and is capped', () => {
    assert.equal(reconnectDelay(0), 1000);
    assert.equal(reconnectDelay(3), 8000);
    assert.equal(reconnectDelay(20), RECONNECT_MAX_DELAY_MS);
  });
});

describe('WebBridge.call over real HTTP', () => {
  let server: Server;
  let base: string;
  const seen: { auth: string | undefined; body: string }[] = [];
  before(async () => {
    server = createServer(async (req, res) => {
      let body = '';
      for await (const chunk of req) body += chunk;
      seen.push({ auth: req.headers.authorization, body });
      res.setHeader('content-type', 'application/json');
      if (req.headers.authorization !== 'Bearer good') {
        res.writeHead(401).end(JSON.stringify({ ok: false, error: { code: 'UNAUTHORIZED', message: 'no' } }));
        return;
      }
      const { method } = JSON.parse(body);
      if (method === 'status') res.end(JSON.stringify({ ok: true, result: { peerId: 'p1' } }));
      else
        res.writeHead(404).end(
          JSON.stringify({
            ok: false,
            error: { code: 'UNKNOWN_METHOD', message: `unknown method "${method}"` },
          }),
        );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it('sends {method, params} with the bearer token and returns the result', async () => {
    const result = await new WebBridge('good', base).call('status');
    assert.deepEqual(result, { peerId: 'p1' });
    assert.equal(seen.at(-1)?.auth, 'Bearer good');
    assert.deepEqual(JSON.parse(seen.at(-1)!.body), { method: 'status', params: {} });
  });
  it('turns node errors and 401 into RpcError with the code', async () => {
    await assert.rejects(
      new WebBridge('good', base).call('nodes'),
      (err: RpcError) => err.code === 'UNKNOWN_METHOD',
    );
    await assert.rejects(
      new WebBridge('bad', base).call('status'),
      (err: RpcError) => err.code === 'UNAUTHORIZED',
    );
  });
  it('reports an unreachable node', async () => {
    await assert.rejects(
      new WebBridge('good', 'http://127.0.0.1:1').call('status'),
      (err: RpcError) => err.code === 'UNREACHABLE',
    );
  });
});
