// npm run ha:up [-- --base-port N] [--dir DIR]: the HA stack on this machine (see stack.ts), ready when
// this returns; `npm run ha:down` stops exactly what it started. HA_BASE_PORT / HA_DIR work too.
import { parseArgs } from 'node:util';
import { defaultSettings, ensurePackages, Stack } from './stack.ts';

const { values } = parseArgs({ options: { 'base-port': { type: 'string' }, dir: { type: 'string' }, 'log-level': { type: 'string' } } });
const settings = defaultSettings({
  ...(values.dir ? { dir: values.dir } : {}),
  ...(values['base-port'] ? { basePort: Number(values['base-port']) } : {}),
  ...(values['log-level'] ? { logLevel: values['log-level'] } : {}),
});
if (!Number.isInteger(settings.basePort) || settings.basePort < 1024 || settings.basePort > 65_000) {
  process.stderr.write(`the base port must be an integer from 1024 to 65000, not ${settings.basePort}\n`);
  process.exit(2);
}
const log = (line: string) => process.stdout.write(`${line}\n`);
const started = Date.now();
let stack: Stack | undefined;
try {
  await ensurePackages(log);
  stack = await Stack.create(settings);
  await stack.up(log);
} catch (err) {
  process.stderr.write(`ha:up failed: ${(err as Error).message}\n`);
  if (stack) {
    process.stderr.write(`logs: ${stack.logDir}; stopping what was started\n`);
    await stack.down(log);
  }
  process.exit(1);
}
log(`\nHA stack up in ${((Date.now() - started) / 1000).toFixed(1)} s\n${stack.urls().map((u) => `  ${u}`).join('\n')}\n\nnpm run ha:down${values.dir ? ` -- --dir ${values.dir}` : ''} stops it.`);
