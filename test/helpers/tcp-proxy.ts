// A TCP forwarder (node:net) in front of a Postgres server, standing in for what a failover puts between
// the service and its database (a virtual IP, HAProxy, a cloud endpoint): it forwards every new connection
// to the current primary, and on a switch it ends every session it carries, as such a front does when the
// primary it pointed at is marked down. The service sees its connections drop and reconnects to the same
// address, which now reaches the new primary.
import net from 'node:net';

export interface TcpProxy {
  /** The port the proxy listens on (127.0.0.1). */
  port: number;
  /** The port new connections are forwarded to. */
  target(): number;
  /**
   * Forwards every later connection to `port`, and destroys every session open now (both sides), as a
   * front does when it marks the old primary down. Returns how many sessions it ended.
   */
  switchTo(port: number): number;
  /** Sessions open right now. */
  sessions(): number;
  /** Connections accepted since the start. */
  accepted(): number;
  /** Stops listening and destroys every session. */
  close(): Promise<void>;
}

interface Session {
  client: net.Socket;
  upstream: net.Socket;
}

export async function startTcpProxy(targetPort: number, host = '127.0.0.1'): Promise<TcpProxy> {
  let target = targetPort;
  let accepted = 0;
  const sessions = new Set<Session>();

  const end = (session: Session) => {
    sessions.delete(session);
    session.client.destroy();
    session.upstream.destroy();
  };

  const server = net.createServer((client) => {
    accepted += 1;
    const upstream = net.connect({ host, port: target });
    const session: Session = { client, upstream };
    sessions.add(session);
    // Nothing read from the client is lost while the upstream connects: pipe() buffers it.
    client.pipe(upstream);
    upstream.pipe(client);
    // Whichever side fails or closes, the other goes too: no half-open session (a refused upstream, the
    // old primary gone, is a connection the client sees closed at once).
    for (const socket of [client, upstream]) {
      socket.on('error', () => end(session));
      socket.on('close', () => end(session));
    }
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    port,
    target: () => target,
    switchTo(next) {
      target = next;
      const open = [...sessions];
      for (const session of open) end(session);
      return open.length;
    },
    sessions: () => sessions.size,
    accepted: () => accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of [...sessions]) end(session);
        server.close(() => resolve());
      }),
  };
}
