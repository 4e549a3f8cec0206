// npm run start:processor [-- --port 4010 --host 127.0.0.1 --key-retention-seconds 86400]: the processor simulator alone.
import { parseArgs } from 'node:util';
import { SimulatorListenError, startSimulator } from './simulator.ts';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '4010' },
    host: { type: 'string', default: '127.0.0.1' },
    'key-retention-seconds': { type: 'string' },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`invalid --port "${values.port}"\n`);
  process.exit(2);
}
const retention = values['key-retention-seconds'];
if (retention !== undefined && !/^\d+(\.\d+)?$/.test(retention)) {
  process.stderr.write(`invalid --key-retention-seconds "${retention}"\n`);
  process.exit(2);
}
const keyRetentionSeconds = retention === undefined ? undefined : Number(retention);
const simulator = await startSimulator(port, values.host, { keyRetentionSeconds }).catch((err: unknown) => {
  if (!(err instanceof SimulatorListenError)) throw err;
  process.stderr.write(`${err.message} (use --port to pick another)\n`);
  process.exit(1);
});
process.stdout.write(`processor simulator listening on ${simulator.url} (PUT /chaos to misbehave, GET /ledger)\n`);
const stop = () => void simulator.close().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
