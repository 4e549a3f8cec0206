// One Postgres server for the whole run: the one at DATABASE_URL, or an embedded one under the OS temp dir.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { copyInitialisedCluster } from './cluster.ts';
import { createTemplateDatabase } from './database.ts';
import { LOG_AUDIT_FILE_VARIABLE, secretsInLog } from './log-audit.ts';
import { freePort } from './ports.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    adminDatabaseUrl: string;
    templateDatabase: string;
  }
}

export default async function setup(project: TestProject) {
  const auditDir = await mkdtemp(path.join(tmpdir(), 'payments-test-logs-'));
  const auditFile = path.join(auditDir, 'logs.jsonl');
  await writeFile(auditFile, '');
  process.env[LOG_AUDIT_FILE_VARIABLE] = auditFile;
  // The service and CLI processes the tests start keep what Node compiled of each module (type stripping
  // included) for the next start: a fresh start costs about twice the CPU, and the suite starts dozens.
  process.env.NODE_COMPILE_CACHE ??= path.join(tmpdir(), 'payments-test-node-compile-cache');
  // After the whole run: no log line of any test, in-process or child process, may hold a secret.
  const auditLogs = async () => {
    const { searched, leaks } = secretsInLog(auditFile);
    await rm(auditDir, { recursive: true, force: true });
    if (leaks.length) {
      // An error thrown here would be printed and the run still pass: this ends it as failed.
      process.stderr.write(`log audit FAILED: ${leaks.length} of ${searched} log lines hold a secret, e.g.: ${leaks[0]!.slice(0, 300)}\n`);
      process.exit(1);
    }
    process.stdout.write(`log audit: ${searched} log lines searched, no API key, Authorization header or webhook secret in any\n`);
  };
  const withTemplate = async (adminUrl: string) => {
    project.provide('adminDatabaseUrl', adminUrl);
    const template = await createTemplateDatabase(adminUrl);
    project.provide('templateDatabase', template.name);
    return template;
  };
  const external = process.env.DATABASE_URL;
  if (external) {
    const template = await withTemplate(external);
    return async () => {
      await template.drop();
      await auditLogs();
    };
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'payments-test-pg-'));
  await chmod(dir, 0o755); // the server runs as another user when we are root
  await copyInitialisedCluster(path.join(dir, 'data'));
  // Without flushes to disk: they protect against the machine losing power, which no test causes (a
  // stopped or killed server recovers from its WAL all the same), and they were a third of the run's
  // system time. The clusters the outage and failover tests stop keep them on. Reads straight from the
  // OS cache (no hand-off to I/O worker processes) and no WAL kept for replicas, which this server has none
  // of. Tests reach it over its Unix socket: the fast tier took about a tenth less CPU than over TCP on
  // loopback. (The service's TCP path is tested by every test that starts a cluster of its own, and by
  // CI's second run, against the machine's Postgres.)
  const server = await startEmbeddedPostgres({
    dir: path.join(dir, 'data'),
    port: await freePort(),
    extraFlags: [
      ...['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'autovacuum=off'],
      ...['-c', 'io_method=sync', '-c', 'wal_level=minimal', '-c', 'max_wal_senders=0'],
      ...['-c', `unix_socket_directories=${tmpdir()}`],
    ],
  });
  const viaSocket = new URL(server.url);
  viaSocket.searchParams.set('host', tmpdir());
  await withTemplate(viaSocket.toString());
  return async () => {
    await server.stop({ fast: true }); // every test has ended: no session of theirs is worth waiting for
    await rm(dir, { recursive: true, force: true });
    await auditLogs();
  };
}
