// A tiny real HTTP proxy (node:http) in front of the app, told per request what to do: forward it, answer
// for the app, drop the connection before or after the app has answered, or never answer.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type ProxyAction =
  | 'forward'
  /** The app does the work and answers; the proxy then drops the connection: the answer is lost. */
  | 'forward_then_drop'
  /** The connection drops before the app sees the request. */
  | 'drop'
  /** Holds the connection open and never answers. */
  | 'hang'
  | { status: number; headers?: Record<string, string>; body?: unknown };

export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  action: ProxyAction;
  /** The app's status when the request was forwarded. */
  upstreamStatus?: number;
  upstreamHeaders?: http.IncomingHttpHeaders;
}

export interface Proxy {
  url: string;
  seen: SeenRequest[];
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'host']);

const withoutHopByHop = (headers: http.IncomingHttpHeaders) =>
  Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name.toLowerCase())));

/** A problem+json answer as the API gives it. */
export const problemAnswer = (status: number, code: string, retryAfter?: string): ProxyAction => ({
  status,
  headers: {
    'content-type': 'application/problem+json',
    'x-request-id': `proxy-${code}`,
    ...(retryAfter === undefined ? {} : { 'retry-after': retryAfter }),
  },
  body: {
    type: `https://payments.example/problems/${code.replaceAll('_', '-')}`,
    title: code,
    status,
    detail: `the test proxy answered ${code}`,
    code,
    request_id: `proxy-${code}`,
  },
});

/** `decide` gets each request and its 1-based number. */
export async function startProxy(
  target: string,
  decide: (req: http.IncomingMessage, n: number) => ProxyAction,
): Promise<Proxy> {
  const seen: SeenRequest[] = [];
  const agent = new http.Agent({ keepAlive: false });

  const server = http.createServer((req, res) => {
    const action = decide(req, seen.length + 1);
    const record: SeenRequest = { method: req.method!, url: req.url!, headers: req.headers, action };
    seen.push(record);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (action === 'hang') return;
      if (action === 'drop') return void req.socket.destroy();
      if (typeof action === 'object') {
        res.writeHead(action.status, action.headers ?? {});
        return void res.end(action.body === undefined ? '' : JSON.stringify(action.body));
      }
      const upstream = http.request(
        `${target}${req.url}`,
        { method: req.method, headers: withoutHopByHop(req.headers), agent },
        (answer) => {
          const body: Buffer[] = [];
          answer.on('data', (chunk: Buffer) => body.push(chunk));
          answer.on('end', () => {
            record.upstreamStatus = answer.statusCode;
            record.upstreamHeaders = answer.headers;
            if (action === 'forward_then_drop') return void req.socket.destroy();
            res.writeHead(answer.statusCode!, withoutHopByHop(answer.headers));
            res.end(Buffer.concat(body));
          });
        },
      );
      upstream.on('error', () => req.socket.destroy());
      upstream.end(Buffer.concat(chunks));
    });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        agent.destroy();
      }),
  };
}
