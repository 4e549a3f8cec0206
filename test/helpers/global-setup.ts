// One Postgres server for the whole run: the one at DATABASE_URL, or an embedded one under the OS temp dir.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { LOG_AUDIT_FILE_VARIABLE, secretsInLog } from './log-audit.ts';
import { freePort } from './ports.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    adminDatabaseUrl: string;
  }
}

export default async function setup(project: TestProject) {
  const auditDir = await mkdtemp(path.join(tmpdir(), 'payments-test-logs-'));
  const auditFile = path.join(auditDir, 'logs.jsonl');
  await writeFile(auditFile, '');
  process.env[LOG_AUDIT_FILE_VARIABLE] = auditFile;
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
  const external = process.env.DATABASE_URL;
  if (external) {
    project.provide('adminDatabaseUrl', external);
    return auditLogs;
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'payments-test-pg-'));
  await chmod(dir, 0o755); // the server runs as another user when we are root
  const server = await startEmbeddedPostgres({ dir: path.join(dir, 'data'), port: await freePort() });
  project.provide('adminDatabaseUrl', server.url);
  return async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
    await auditLogs();
  };
}
