// npm run ha:down [-- --dir DIR] [--keep-data]: stops every process `ha:up` (or a drill) recorded in the
// state file, and nothing else; then removes the data (logs stay).
import { parseArgs } from 'node:util';
import { defaultSettings, Stack } from './stack.ts';

const { values } = parseArgs({ options: { dir: { type: 'string' }, 'keep-data': { type: 'boolean', default: false } } });
const { dir } = defaultSettings(values.dir ? { dir: values.dir } : {});
const stack = Stack.load(dir);
if (!stack) {
  process.stdout.write(`no HA stack recorded in ${dir}\n`);
  process.exit(0);
}
await stack.down((line) => process.stdout.write(`${line}\n`));
if (!values['keep-data']) stack.removeData();
process.stdout.write(`HA stack stopped${values['keep-data'] ? '' : '; data removed'}; logs in ${stack.logDir}\n`);
