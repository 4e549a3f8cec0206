import { createServer } from 'node:net';

// Below the kernel's range for outgoing connections (Linux: 32768-60999), so between this check and the
// listen of the process the port is for, no connection anywhere on the machine can be given it as its
// local port (a port found free by binding port 0 comes from that very range, and sometimes was).
const LOWEST = 20000;
const HIGHEST = 32767;
const TRIES = 100;

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A port nothing listens on now, for a server a test is about to start. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < TRIES; i += 1) {
    const port = LOWEST + Math.floor(Math.random() * (HIGHEST - LOWEST + 1));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port between ${LOWEST} and ${HIGHEST} after ${TRIES} tries`);
}
