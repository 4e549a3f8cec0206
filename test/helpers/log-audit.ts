// Every log line the suite sees (apps built in-process and service processes alike) is kept in one file
// for the run, and searched at its end for anything that looks like a secret.
import { appendFileSync, readFileSync } from 'node:fs';

export const LOG_AUDIT_FILE_VARIABLE = 'PAYMENTS_TEST_LOG_AUDIT_FILE';

// An API key, an Authorization header's credentials, a webhook signing secret.
const SECRET_PATTERNS = [/sk_test_[A-Za-z0-9_-]{16,}/, /\bbearer\s+[A-Za-z0-9._~+/-]{8,}/i, /whsec_[A-Za-z0-9+/=]{8,}/];

export function auditLogLine(line: string): void {
  const file = process.env[LOG_AUDIT_FILE_VARIABLE];
  if (file) appendFileSync(file, line.endsWith('\n') ? line : `${line}\n`);
}

/** The lines of the run's log that hold a secret, and how many lines were searched. */
export function secretsInLog(file: string): { searched: number; leaks: string[] } {
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  return { searched: lines.length, leaks: lines.filter((line) => SECRET_PATTERNS.some((p) => p.test(line))) };
}
