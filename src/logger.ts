import { type Logger, pino } from 'pino';
import { currentRequestId } from './request-context.ts';

export type { Logger };

const SECRET_FIELDS = ['authorization', 'Authorization', 'cookie', 'apiKey', 'api_key', 'secret'];
// Redaction paths are case-sensitive, so both spellings of a header are listed.
export const REDACT_PATHS = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `headers.${f}`, `*.headers.${f}`]);

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'payments' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      // Every line written while a request is served carries its id, whoever writes it.
      mixin: () => {
        const requestId = currentRequestId();
        return requestId ? { request_id: requestId } : {};
      },
    },
    destination,
  );
}
