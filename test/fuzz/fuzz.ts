// The HTTP fuzzer: for every endpoint, fast-check makes hostile requests (bodies, query strings, path ids,
// headers, methods, bytes no well-behaved client sends) and checks every answer against the service's
// contract. Requests go out raw, one new connection each (node:http with exact byte strings, or a bare
// socket when node:http refuses to send them), so what is tested is what the bytes say.
//
// Properties of every request:
//  - an answer comes (a hang is a failure), in under `deadlineMs`;
//  - no 5xx;
//  - a 2xx is a legitimate success (JSON that parses where JSON is said); a 4xx is application/problem+json
//    whose body parses, with `status` equal to the HTTP status, a string `code` and a string `request_id`
//    (the X-Request-Id of the answer, unless the answer is a stored one replayed);
//  - rows: a request refused writes nothing (rowCounts() unchanged). Only a POST that ran writes, and only
//    what it should: a new charge (201/202/402) one key and one charge; a new refund one key and one refund;
//    a refund refused by a business rule (404 no such charge, 409 not refundable / exceeds) one key, its
//    stored answer. A replayed answer (Idempotent-Replayed) writes nothing.
//
// A violation does not stop the run: every endpoint gets all its runs, each kind of violation (its
// signature: "5xx 500", "not problem+json 417"...) is remembered with the run that showed it first, and
// afterwards shrunk on its own by fast-check from that run. Every input comes from the seed (each endpoint
// draws from its own stream derived from it): seed, endpoint and fast-check's path replay any of them.
//
// Requests malformed at the HTTP level (bytes Node's parser refuses, no Host, an unknown Expect, a head past
// 16 KiB) are tagged: an app built bare cannot answer them (Node does), so by default a bare 4xx from Node
// is accepted for them; `httpLayer: 'problem'` holds them to the contract too (for the real main.ts process).
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import zlib from 'node:zlib';
import fc from 'fast-check';
import { CURRENCIES, TEST_SOURCES } from '../../src/charges/charges.schemas.ts';
import { REFUND_REASONS } from '../../src/refunds/refunds.schemas.ts';

export const ENDPOINTS = [
  'GET /livez',
  'GET /readyz',
  'GET /health',
  'GET /metrics',
  'GET /v1/account',
  'POST /v1/charges',
  'GET /v1/charges',
  'GET /v1/charges/:id',
  'POST /v1/refunds',
  'GET /v1/refunds/:id',
] as const;
export type Endpoint = (typeof ENDPOINTS)[number];

export interface FuzzOptions {
  baseUrl: string;
  /** HeaderSet of a valid caller, e.g. { Authorization: 'Bearer sk_test_…' }. */
  auth: Record<string, string>;
  apiKey: string;
  runsPerEndpoint: number;
  seed: number;
  /** Longest acceptable answer time, ms. */
  deadlineMs: number;
  /** The fuzzed account's rows: idempotency_keys, charges, refunds. */
  rowCounts: () => Promise<Record<string, number>>;
  log?: (line: string) => void;
  /** Only these endpoints (default: all). */
  endpoints?: readonly Endpoint[];
  /** fast-check's replay path of a counterexample (with a single endpoint). */
  path?: string;
  /** Shrink a failure to a smaller counterexample (default true). */
  shrink?: boolean;
  /** No answer after this long is a hang (default max(10 s, 2 × deadlineMs)). */
  clientTimeoutMs?: number;
  /**
   * Requests malformed at the HTTP level (bytes Node's parser refuses, no Host, an Expect it does not know)
   * are answered by Node's HTTP server, not by the app. 'bare-ok' (default): the app built bare cannot
   * answer those, so a bare 4xx from Node is accepted for them and tallied as "4xx (node)". 'problem':
   * they too must be problem+json (as src/main.ts promises for what the parser refuses).
   */
  httpLayer?: 'bare-ok' | 'problem';
  /** Only HTTP-level malformations (for a pass against the real process of src/main.ts). */
  httpLayerOnly?: boolean;
  /** Lines the server logged (warn and up) since the last call, shown with a failure. */
  serverLog?: () => string[];
  /** Flags the printed replay commands need besides seed, endpoint and path (e.g. '--main-only'). */
  replayFlags?: string;
  /** Print progress every this many requests per endpoint (default: a line per endpoint). */
  progressEvery?: number;
}

/** One request exactly as sent: the request-target, header values and body are byte strings (one char = one byte). */
export interface FuzzInput {
  endpoint: Endpoint;
  /** Which generators shaped it. */
  tags: string[];
  method: string;
  target: string;
  headers: [string, string][];
  body: string | undefined;
  /** Send the body with Transfer-Encoding: chunked instead of a Content-Length. */
  chunked: boolean;
  /** Malformed at the HTTP level: Node's HTTP server may refuse it before the app sees it. */
  httpLayer: boolean;
}

export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  ms: number;
  transport: 'http' | 'socket';
  /** No complete answer: why. */
  error?: string;
}

export interface Violation {
  endpoint: Endpoint;
  /** The kinds of its problems ("5xx 500", "not problem+json 417", "rows changed"...): what findings group by. */
  signature: string;
  problems: string[];
  input: string;
  answer: string;
  serverLog: string[];
}

/** One kind of violation on one endpoint: its first occurrence, and fast-check's shrunk counterexample of it. */
export interface Finding {
  endpoint: Endpoint;
  signature: string;
  /** Requests of the run that showed it. */
  occurrences: number;
  /** How often each generator tag was among those requests' tags: what they had in common. */
  tagCounts: Record<string, number>;
  /** The errors the server logged for those requests (type, message, where), counted. */
  serverErrors: Record<string, number>;
  first: Violation & { run: number; replay: string };
  shrunk?: Violation & { path: string; numShrinks: number; replay: string };
  /** Why there is no shrunk counterexample, when there is none. */
  note?: string;
}

export interface FuzzReport {
  seed: number;
  /** endpoint → answer ("201", "400", "400 (node)", "timeout"...) → requests of the run (not of shrinking). */
  counts: Record<string, Record<string, number>>;
  requests: number;
  /** Requests sent while shrinking counterexamples. */
  shrinkRequests: number;
  /** Requests that broke a property. */
  violationCount: number;
  findings: Finding[];
  slowest: { endpoint: Endpoint; ms: number; status: string; input: string } | undefined;
  elapsedMs: number;
  /** The rows the fuzzed account had at the end. */
  rows: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------------
// Byte strings: every char is one byte (latin1), so invalid UTF-8 and raw control bytes can be said exactly.

/** UTF-8 bytes of a JS string (lone surrogates become EF BF BD, as any encoder does). */
const utf8 = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
/** A JSON string literal of `s`, as UTF-8 bytes (lone surrogates escaped as \udXXX by JSON.stringify). */
const jstr = (s: string) => utf8(JSON.stringify(s));
const hex = (n: bigint) => n.toString(16).padStart(16, '0');
/** Percent-encodes every byte that is not unreserved. */
const pct = (bytes: string) =>
  [...bytes].map((c) => (/[A-Za-z0-9._~-]/.test(c) ? c : `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)).join('');

type Field = [key: string, value: string];
const objectText = (fields: Field[], sep = ',') => `{${fields.map(([k, v]) => `${k}:${v}`).join(sep)}}`;

const RESERVED = ['__proto__', 'constructor', 'prototype'] as const;

const SQL = [
  "' or '1'='1",
  "'; drop table charges; --",
  "1; select pg_sleep(10); --",
  "ch_1' --",
  "') or ('a'='a",
  '" or ""="',
  '1 union select secret_hash from api_keys',
  "'||pg_sleep(5)||'",
  "E'\\x00'",
  '$1',
  '%',
  '_',
  '\\',
  '\\\\',
  "'",
  '";',
  '${jndi:ldap://x}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  '../../etc/passwd',
  'NULL',
];

// JSON number texts: valid JSON, meaning weird numbers.
const NUMBER_TEXTS = [
  '0', '-0', '1', '-1', '1.5', '1000.5', '0.1', '1e3', '1E3', '1e+3', '10e2', '1000.0', '1000.00000000000001', '0.1e4',
  '99999999', '100000000', '99999999.0000000001', '99999999.5', '9007199254740991', '9007199254740992', '9007199254740993',
  '-9007199254740993', '18446744073709551616', '1e308', '1e309', '-1e309', '1e-400', '5e-324', '-0.0', '2e0', '1e21',
  '4294967296', '-2147483649', '123456789012345678901234567890', '1'.repeat(400), `0.${'0'.repeat(300)}1`,
];
// Texts that are not JSON at all where a value should be.
const BAD_VALUE_TEXTS = [
  '01', '+1', '.5', '5.', '1e', '-', 'NaN', 'Infinity', '-Infinity', '0x10', '1_000', '--1', 'undefined', "'usd'", 'usd',
  'True', 'nul', '"unterminated', '"\\x41"', '"\\u12"', '"\\uZZZZ"', '"\\a"', '[1,]', '{"a":1,}', '{,}', '[', '{', '}',
];
// Raw string literals: escapes and bytes no JSON.stringify would write.
const STRING_LITERALS = [
  '"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udc00"', '"a\\ud800b"', '"\\ud800\\ud800"', '"\\udbff\\udfff"',
  '"\\ud83d\\ude00"', '"\\udc00\\ud800"', '"\\u001f"', '"\\b\\f\\n\\r\\t"', '"\\/"', '"\\u2028\\u2029"', '"\\ufeff"',
  '"\\uffff"', '"\\ufffe"', '"\\u0075\\u0073\\u0064"', '"\\u0000usd"', '"usd\\u0000"', '""', '" "', '"usd "', '" usd"',
  '"USD"', '"Usd"', '"us"', '"usdd"', '"ｕｓｄ"', '"tok_visa\\u0000"', '"tok_visa "', '"TOK_VISA"', '"tok_vis\\u0061"',
];
// Raw bytes inside a string literal: control characters (not allowed unescaped in JSON) and invalid UTF-8.
const STRING_BYTE_LITERALS = [
  '"a\x00b"', '"\x01"', '"\x1f"', '"\x7f"', '"a\tb"', '"a\nb"', '"\r"', '"\xff"', '"\xfe\xff"', '"\xc0\x80"', '"\xc1\xbf"',
  '"\xed\xa0\x80"', '"\xed\xbf\xbf"', '"\xf4\x90\x80\x80"', '"\xf8\x88\x80\x80\x80"', '"\xe2\x82"', '"\x80"', '"\xbf"',
  '"\xf0\x9f\x98"', '"a\xe9b"', '"\xef\xbb\xbf"', '"\xe2\x80\xae"',
];

// ---------------------------------------------------------------------------------------------------
// Arbitraries of JSON value texts.

/** fc.oneof whose shrinking may also move to the first choice (the plain one, by convention here). */
const oneof: typeof fc.oneof = ((...args: Parameters<typeof fc.oneof>) => fc.oneof({ withCrossShrink: true }, ...(args as fc.MaybeWeightedArbitrary<unknown>[]))) as typeof fc.oneof;

const noBiasKey = fc.noBias(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));

const stringText: fc.Arbitrary<string> = oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 30 }).map(jstr) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }).map(jstr) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }).map(jstr) },
  { weight: 3, arbitrary: fc.constantFrom(...STRING_LITERALS) },
  { weight: 2, arbitrary: fc.constantFrom(...STRING_BYTE_LITERALS) },
  { weight: 2, arbitrary: fc.constantFrom(...SQL).map(jstr) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom('x', 'é', '€', '😀', '\u0000', '\ud800'), fc.constantFrom(1, 39, 40, 41, 249, 250, 251, 499, 500, 501, 2000))
      .map(([c, n]) => jstr(c.repeat(n))),
  },
);

const numberText: fc.Arbitrary<string> = oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NUMBER_TEXTS) },
  { weight: 2, arbitrary: fc.integer().map(String) },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }).map((x) => (Object.is(x, -0) ? '-0' : JSON.stringify(x))) },
  { weight: 1, arbitrary: fc.bigInt().map(String) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 99_999_999 }).map((n) => `${n}e0`) },
);

/** A nested value `depth` deep: arrays, objects, or both, with `leaf` at the bottom. */
function nested(depth: number, kind: 'array' | 'object' | 'mixed', leaf = '1'): string {
  if (kind === 'array') return `${'['.repeat(depth)}${leaf}${']'.repeat(depth)}`;
  if (kind === 'object') return `${'{"a":'.repeat(depth)}${leaf}${'}'.repeat(depth)}`;
  const half = Math.floor(depth / 2);
  return `${'[{"a":'.repeat(half)}${leaf}${'}]'.repeat(half)}`;
}

const depthArb = oneof(
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 64 }) },
  { weight: 1, arbitrary: fc.integer({ min: 500, max: 2500 }) },
  { weight: 3, arbitrary: fc.integer({ min: 2500, max: 9000 }) },
);
const deepText = fc
  .tuple(depthArb, fc.constantFrom('array' as const, 'object' as const, 'mixed' as const), fc.constantFrom('1', '"x"', 'null', '{"__proto__":1}', '[]'))
  .map(([d, k, leaf]) => nested(k === 'array' ? d : Math.ceil(d / 2), k, leaf));

/** Objects whose keys name parts of every JavaScript object, at depth 1 to 5. */
const protoObjectText = fc
  .tuple(fc.constantFrom(...RESERVED, '__proto__ ', '__PROTO__', 'hasOwnProperty', 'toString', 'valueOf', 'isPrototypeOf'), fc.integer({ min: 0, max: 4 }), fc.constantFrom('{"polluted":"yes"}', '"x"', '1', 'null', '[]', '{}'))
  .map(([key, depth, value]) => {
    let text = `{${jstr(key)}:${value}}`;
    for (let i = 0; i < depth; i += 1) text = `{"a${i}":${text}}`;
    return text;
  });

const anyValueText: fc.Arbitrary<string> = oneof(
  { weight: 4, arbitrary: stringText },
  { weight: 4, arbitrary: numberText },
  { weight: 2, arbitrary: fc.constantFrom('true', 'false', 'null', '[]', '{}', '[1000]', '["usd"]', '{"a":1}', '{"":""}', '[null]') },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => utf8(JSON.stringify(v))) },
  { weight: 1, arbitrary: protoObjectText },
  { weight: 1, arbitrary: deepText },
  { weight: 1, arbitrary: fc.constantFrom(...BAD_VALUE_TEXTS) },
);

const keyText: fc.Arbitrary<string> = oneof(
  { weight: 3, arbitrary: fc.constantFrom(...RESERVED).map(jstr) },
  { weight: 2, arbitrary: fc.constantFrom('Amount', 'AMOUNT', 'amount ', ' amount', 'amount\u0000', 'capture', 'customer', 'id', 'object', 'status', 'account_id', 'idempotency_key_id', 'amount_refunded', 'metadata.x', '', ' ', '\ud800', '😀', 'toString', 'hasOwnProperty', '__defineGetter__').map(jstr) },
  { weight: 1, arbitrary: fc.constantFrom('"\\ud800"', '"a\\u0000"', '"\\u005f_proto__"', '"__proto\\u005f_"', '"\\u0063onstructor"') },
  { weight: 1, arbitrary: fc.constantFrom(...STRING_BYTE_LITERALS) },
  { weight: 2, arbitrary: fc.string({ maxLength: 12 }).map(jstr) },
  { weight: 1, arbitrary: fc.constantFrom(...SQL).map(jstr) },
);

// ---------------------------------------------------------------------------------------------------
// Bodies.

interface Body {
  text: string | undefined;
  tags: string[];
}

const metadataValid = fc.dictionary(
  fc.string({ minLength: 1, maxLength: 40 }).filter((k) => !(RESERVED as readonly string[]).includes(k) && !k.includes('\u0000')),
  fc.string({ maxLength: 60 }),
  { maxKeys: 20 },
);

/** The fields of a valid charge, as texts (numbers sometimes spelled unusually, still valid). */
const validChargeFields: fc.Arbitrary<Field[]> = fc
  .record({
    amount: oneof(fc.integer({ min: 1, max: 99_999_999 }), fc.constantFrom(1, 1000, 99_999_999)),
    spelling: fc.constantFrom('plain', 'plain', 'plain', 'exp', 'dot0'),
    currency: fc.constantFrom(...CURRENCIES),
    source: oneof({ weight: 4, arbitrary: fc.constantFrom('tok_visa', 'tok_mastercard') }, { weight: 1, arbitrary: fc.constantFrom(...TEST_SOURCES) }),
    description: fc.option(oneof(fc.string({ maxLength: 80 }), fc.constantFrom('d'.repeat(500), '€'.repeat(500), '😀'.repeat(250), ...SQL)), { nil: undefined }),
    metadata: fc.option(metadataValid, { nil: undefined }),
  })
  .map(({ amount, spelling, currency, source, description, metadata }) => {
    const amountText = spelling === 'exp' ? `${amount}e0` : spelling === 'dot0' ? `${amount}.0` : String(amount);
    const fields: Field[] = [
      ['"amount"', amountText],
      ['"currency"', jstr(currency)],
      ['"source"', jstr(source)],
    ];
    if (description !== undefined) fields.push(['"description"', jstr(description)]);
    if (metadata !== undefined) fields.push(['"metadata"', utf8(JSON.stringify(metadata))]);
    return fields;
  });

function validRefundFields(chargeIds: string[]): fc.Arbitrary<Field[]> {
  return fc
    .record({
      charge: oneof(
        { weight: 5, arbitrary: fc.constantFrom(...chargeIds) },
        { weight: 1, arbitrary: fc.stringMatching(/^ch_[A-Za-z0-9_-]{1,64}$/) },
      ),
      amount: fc.option(oneof(fc.integer({ min: 1, max: 500 }), fc.constantFrom(1, 99_999_999)), { nil: undefined }),
      reason: fc.option(fc.constantFrom(...REFUND_REASONS), { nil: undefined }),
    })
    .map(({ charge, amount, reason }) => {
      const fields: Field[] = [['"charge"', jstr(charge)]];
      if (amount !== undefined) fields.push(['"amount"', String(amount)]);
      if (reason !== undefined) fields.push(['"reason"', jstr(reason)]);
      return fields;
    });
}

type Mutation =
  | { kind: 'replace'; index: number; value: string }
  | { kind: 'remove'; index: number }
  | { kind: 'extra'; key: string; value: string; at: number }
  | { kind: 'duplicate'; index: number; value: string; before: boolean }
  | { kind: 'metadata'; key: string; value: string }
  | { kind: 'rename'; index: number; key: string }
  | { kind: 'wrap'; how: 'array' | 'string' | 'nested' }
  | { kind: 'bytes'; index: number; bytes: string }
  | { kind: 'whitespace'; ws: string };

const mutationArb: fc.Arbitrary<Mutation> = oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('replace' as const), index: fc.nat(), value: anyValueText }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), index: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('extra' as const), key: keyText, value: anyValueText, at: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), index: fc.nat(), value: anyValueText, before: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('metadata' as const), key: keyText, value: anyValueText }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('rename' as const), index: fc.nat(), key: keyText }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('wrap' as const), how: fc.constantFrom('array' as const, 'string' as const, 'nested' as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('bytes' as const),
      index: fc.nat(),
      bytes: oneof(fc.constantFrom('\x00', '\xff', '\xc0\x80', '\xed\xa0\x80', '\xe2\x82', '\x80', '\x1b[31m', '\x7f', '\xf4\x90\x80\x80'), fc.uint8Array({ minLength: 1, maxLength: 6 }).map((a) => Buffer.from(a).toString('latin1'))),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('whitespace' as const), ws: fc.constantFrom(' ', '\n', '\r\n', '\t', '\u00a0', '\f', '\v', '\ufeff', '\u2028').map(utf8) }) },
);

function applyMutation(fields: Field[], m: Mutation): { text: string; tag: string } {
  const f = fields.map((x) => [...x] as Field);
  // No field left to change (an earlier mutation emptied the object): add one instead.
  if (f.length === 0 && ['replace', 'remove', 'duplicate', 'rename', 'bytes'].includes(m.kind)) {
    return { text: objectText([['"amount"', m.kind === 'replace' ? m.value : '1']]), tag: 'field into empty object' };
  }
  const pick = (i: number) => i % f.length;
  switch (m.kind) {
    case 'replace':
      f[pick(m.index)]![1] = m.value;
      return { text: objectText(f), tag: `replace ${f[pick(m.index)]![0]}` };
    case 'remove': {
      const [removed] = f.splice(pick(m.index), 1);
      return { text: objectText(f), tag: `remove ${removed![0]}` };
    }
    case 'extra':
      f.splice(m.at % (f.length + 1), 0, [m.key, m.value]);
      return { text: objectText(f), tag: 'extra key' };
    case 'duplicate': {
      const [key, value] = f[pick(m.index)]!;
      f.splice(m.before ? pick(m.index) : pick(m.index) + 1, 0, [key, m.value]);
      return { text: objectText(f), tag: `duplicate ${key}${m.before ? ' (mutant first)' : ' (mutant last)'}${value === m.value ? ' same' : ''}` };
    }
    case 'metadata': {
      const at = f.findIndex(([k]) => k === '"metadata"');
      const entry = `${m.key}:${m.value}`;
      if (at >= 0 && f[at]![1].startsWith('{') && f[at]![1] !== '{}') f[at]![1] = `{${entry},${f[at]![1].slice(1)}`;
      else if (at >= 0) f[at]![1] = `{${entry}}`;
      else f.push(['"metadata"', `{${entry}}`]);
      return { text: objectText(f), tag: 'metadata entry' };
    }
    case 'rename':
      f[pick(m.index)]![0] = m.key;
      return { text: objectText(f), tag: 'rename key' };
    case 'wrap':
      if (m.how === 'array') return { text: `[${objectText(f)}]`, tag: 'wrapped in array' };
      if (m.how === 'string') return { text: JSON.stringify(objectText(f)), tag: 'wrapped in string' };
      return { text: `{"charge":${objectText(f)}}`, tag: 'wrapped in object' };
    case 'bytes': {
      // Inside a string value when there is one, else right after the opening brace.
      const at = f.findIndex(([, v]) => v.startsWith('"'));
      if (at >= 0) f[at]![1] = `"${m.bytes}${f[at]![1].slice(1)}`;
      else return { text: `{${m.bytes}${objectText(f).slice(1)}`, tag: 'raw bytes' };
      return { text: objectText(f), tag: `raw bytes in ${f[at]![0]}` };
    }
    case 'whitespace':
      return { text: `${m.ws}${objectText(f, `${m.ws},${m.ws}`)}${m.ws}`, tag: 'whitespace' };
  }
}

/** A body near and past 16 KiB (16384 bytes), padded to exactly `target` bytes. */
const hugeBody = (base: fc.Arbitrary<Field[]>) =>
  fc
    .record({
      base,
      target: oneof(
        { weight: 3, arbitrary: fc.integer({ min: 16384 - 8, max: 16384 + 8 }) },
        { weight: 2, arbitrary: fc.integer({ min: 15000, max: 18000 }) },
        { weight: 1, arbitrary: fc.integer({ min: 1000, max: 15000 }) },
        { weight: 1, arbitrary: fc.integer({ min: 18000, max: 64 * 1024 }) },
      ),
      how: fc.constantFrom('description', 'metadata value', 'unknown key', 'whitespace', 'many keys', 'many metadata keys', 'multibyte'),
    })
    .map(({ base, target, how }) => {
      const text = objectText(base);
      const room = Math.max(0, target - text.length - 40);
      let padded: string;
      switch (how) {
        case 'description':
          padded = objectText([...base.filter(([k]) => k !== '"description"'), ['"description"', `"${'d'.repeat(room)}"`]]);
          break;
        case 'metadata value':
          padded = objectText([...base.filter(([k]) => k !== '"metadata"'), ['"metadata"', `{"k":"${'v'.repeat(room)}"}`]]);
          break;
        case 'unknown key':
          padded = objectText([...base, [`"${'k'.repeat(room)}"`, '1']]);
          break;
        case 'whitespace':
          padded = `${' '.repeat(room)}${text}`;
          break;
        case 'many keys': {
          const n = Math.max(1, Math.floor(room / 12));
          padded = objectText([...base, ...Array.from({ length: n }, (_, i): Field => [`"k${i}"`, '0'])]);
          break;
        }
        case 'many metadata keys': {
          const n = Math.max(1, Math.floor(room / 12));
          padded = objectText([...base.filter(([k]) => k !== '"metadata"'), ['"metadata"', `{${Array.from({ length: n }, (_, i) => `"m${i}":"v"`).join(',')}}`]]);
          break;
        }
        default:
          padded = objectText([...base.filter(([k]) => k !== '"description"'), ['"description"', jstr('€'.repeat(Math.floor(room / 3)))]]);
      }
      const short = target - padded.length;
      return { text: short > 0 ? `${padded}${' '.repeat(short)}` : padded, tags: [`huge ${how} ${target}B`] };
    });

/** Whole bodies that are not an object of fields: scalars, garbage, random bytes, empty. */
const oddBody: fc.Arbitrary<Body> = oneof(
  fc.constantFrom('', ' ', 'null', 'true', '1', '"x"', '[]', '{}', '[{}]', '{', '}', '{}}', '{"amount":1000', '{"a":1}garbage', '\ufeff{}', '{}\u0000', 'amount=1000&currency=usd', '<xml/>', '{"amount":1000,}', '{amount:1000}', "{'amount':1000}").map((t) => ({ text: utf8(t), tags: ['odd body'] })),
  fc.constant<Body>({
    text: '--fuzz\r\nContent-Disposition: form-data; name="amount"\r\n\r\n1000\r\n--fuzz\r\nContent-Disposition: form-data; name="currency"\r\n\r\nusd\r\n--fuzz--\r\n',
    tags: ['multipart body'],
  }),
  fc.json({ maxDepth: 4 }).map((t) => ({ text: utf8(t), tags: ['random json'] })),
  fc.uint8Array({ maxLength: 300 }).map((a) => ({ text: Buffer.from(a).toString('latin1'), tags: ['random bytes'] })),
  deepText.map((t) => ({ text: t, tags: ['deep'] })),
  protoObjectText.map((t) => ({ text: t, tags: ['proto keys'] })),
);

function postBody(valid: fc.Arbitrary<Field[]>, prefix: string): fc.Arbitrary<Body> {
  const deepField = fc
    .tuple(valid, deepText, fc.nat())
    .map(([fields, deep, i]) => {
      const f = fields.map((x) => [...x] as Field);
      if (i % 3 === 0) f.push(['"metadata"', `{"k":${deep}}`]);
      else f[i % f.length]![1] = deep;
      return { text: objectText(f), tags: [`deep field`] };
    });
  return oneof(
    { weight: 5, arbitrary: valid.map((f) => ({ text: objectText(f), tags: [`valid ${prefix}`] })) },
    { weight: 10, arbitrary: fc.tuple(valid, fc.array(mutationArb, { minLength: 1, maxLength: 1 })).map(([f, ms]) => mutate(f, ms, prefix)) },
    { weight: 2, arbitrary: fc.tuple(valid, fc.array(mutationArb, { minLength: 2, maxLength: 4 })).map(([f, ms]) => mutate(f, ms, prefix)) },
    { weight: 2, arbitrary: hugeBody(valid) },
    { weight: 2, arbitrary: deepField },
    { weight: 3, arbitrary: oddBody },
  );
}

/** A valid body with one mutation or several in a row (each on what the one before left, when it parses). */
function mutate(valid: Field[], mutations: Mutation[], prefix: string): Body {
  let fields = valid;
  let text = objectText(fields);
  const tags: string[] = [];
  for (const m of mutations) {
    const r = applyMutation(fields, m);
    text = r.text;
    tags.push(r.tag);
    if (!text.startsWith('{')) break;
    fields = parseFieldsLoosely(text) ?? fields;
  }
  return { text, tags: [`mutated ${prefix}: ${tags.join(' + ')}`] };
}

/** Splits a flat object text made by objectText back into fields, when it is simple enough; else undefined. */
function parseFieldsLoosely(text: string): Field[] | undefined {
  try {
    const value = JSON.parse(Buffer.from(text, 'latin1').toString('utf8')) as unknown;
    if (!value || typeof value !== 'object' || Array.isArray(value)) return undefined;
    return Object.entries(value).map(([k, v]) => [jstr(k), utf8(JSON.stringify(v) ?? 'null')]);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------
// HeaderSet.

interface HeaderSet {
  headers: [string, string][];
  tags: string[];
  httpLayer: boolean;
}

const H = (name: string, value: string, tag: string, httpLayer = false): HeaderSet => ({ headers: [[name, value]], tags: [tag], httpLayer });
const NONE: HeaderSet = { headers: [], tags: [], httpLayer: false };
const merge = (...parts: HeaderSet[]): HeaderSet => ({
  headers: parts.flatMap((p) => p.headers),
  tags: parts.flatMap((p) => p.tags),
  httpLayer: parts.some((p) => p.httpLayer),
});

/** Header values Node's parser refuses or that cannot be sent by a client library: CTLs, bare CR/LF. */
const CTL_SUFFIXES = ['\x00', '\x01', '\x08', '\x0b', '\x1f', '\x7f', '\r', '\n'];

function authHeaders(apiKey: string): fc.Arbitrary<HeaderSet> {
  const k = apiKey;
  const variants: [string, string][] = [
    ['', 'empty'],
    ['Bearer', 'scheme only'],
    ['Bearer ', 'scheme and space'],
    [`bearer ${k}`, 'lowercase scheme'],
    [`BEARER ${k}`, 'uppercase scheme'],
    [`Bearer  ${k}`, 'two spaces'],
    [`Bearer ${k} `, 'trailing space'],
    [` Bearer ${k}`, 'leading space'],
    [`Bearer\t${k}`, 'tab'],
    [`Basic ${Buffer.from(`${k}:`).toString('base64')}`, 'basic'],
    [`Token ${k}`, 'other scheme'],
    [`Bearer=${k}`, 'equals'],
    [`Bearer:${k}`, 'colon'],
    [k, 'bare key'],
    [`Bearer ${k}x`, 'key plus one'],
    [`Bearer ${k.slice(0, -1)}`, 'key minus one'],
    [`Bearer ${k.toUpperCase()}`, 'key uppercased'],
    [`Bearer ${k},Bearer ${k}`, 'key twice'],
    [`Bearer ${k} ${k}`, 'two keys'],
    ['Bearer sk_test_short', 'short key'],
    [`Bearer sk_live_${k.slice(8)}`, 'live prefix'],
    [`Bearer sk_test_${'A'.repeat(128)}`, 'unknown 128'],
    [`Bearer sk_test_${'A'.repeat(129)}`, 'too long 129'],
    [`Bearer ${'a'.repeat(8000)}`, 'huge'],
    [`Bearer ${utf8(`${k}é`)}`, 'utf-8 suffix'],
    [`Bearer ${k}\xe9`, 'latin1 suffix'],
    [`Bearer ${utf8('sk_test_ÄÖÜäöüÄÖÜäöüÄÖÜ')}`, 'non-ascii key'],
    ["Bearer ' or 1=1 --", 'sql'],
    [`Bearer sk_test_${"'or'1'='1".padEnd(20, '-')}`, 'sql-shaped key'],
  ];
  return oneof(
    { weight: 30, arbitrary: fc.constant(H('Authorization', `Bearer ${k}`, '')) },
    { weight: 2, arbitrary: fc.constant<HeaderSet>({ ...NONE, tags: ['no auth'] }) },
    { weight: 6, arbitrary: fc.constantFrom(...variants).map(([v, tag]) => H('Authorization', v, `auth: ${tag}`)) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(...CTL_SUFFIXES).map((c) => H('Authorization', `Bearer ${k}${c}x`, `auth: CTL ${JSON.stringify(c)}`, true)),
    },
    {
      weight: 1,
      arbitrary: fc.boolean().map((validFirst) => ({
        headers: [['Authorization', validFirst ? `Bearer ${k}` : 'Bearer nope'], ['Authorization', validFirst ? 'Bearer nope' : `Bearer ${k}`]] as [string, string][],
        tags: [`auth: two headers, valid ${validFirst ? 'first' : 'second'}`],
        httpLayer: false,
      })),
    },
  );
}

/** Well-formed, odd, overlong, quoted and broken values for Idempotency-Key and X-Request-Id. */
const keyLikeValue: fc.Arbitrary<[string, string, boolean]> = oneof(
  fc.constantFrom<[string, string, boolean]>(
    ['', 'empty', false],
    [' ', 'space', false],
    ['""', 'empty quoted', false],
    ['"', 'lone quote', false],
    ['"abc', 'unterminated quote', false],
    ['abc"', 'trailing quote', false],
    ['"a\\"b"', 'escaped quote', false],
    ['"a\\\\b"', 'escaped backslash', false],
    ['"a\\xb"', 'bad escape', false],
    ['"a"b"', 'inner quote', false],
    ['"\\"', 'escape at end', false],
    ['"a\\', 'unterminated escape', false],
    ["'abc'", 'single quotes', false],
    ['a\tb', 'inner tab', false],
    ['a b', 'inner space', false],
    ['a,b', 'comma', false],
    [`${'a'.repeat(255)}`, '255 chars', false],
    [`${'a'.repeat(256)}`, '256 chars', false],
    [`"${'a'.repeat(255)}"`, 'quoted 255', false],
    [`"${'a'.repeat(256)}"`, 'quoted 256', false],
    [`${'a'.repeat(128)}`, '128 chars', false],
    [`${'a'.repeat(129)}`, '129 chars', false],
    [`${'k'.repeat(8000)}`, '8000 chars', false],
    [`${'k'.repeat(20000)}`, '20000 chars (past the header limit)', true],
    ['\xe9t\xe9', 'latin1 bytes', false],
    [utf8('clé-😀'), 'utf-8 bytes', false],
    ['\xff\xfe', 'invalid utf-8', false],
    ['abc<script>', 'markup', false],
    ['req:1.2_A-b', 'request-id charset', false],
  ),
  fc.constantFrom(...SQL).map((s): [string, string, boolean] => [s, 'sql', false]),
  fc.string({ minLength: 1, maxLength: 40, unit: 'binary-ascii' }).filter((s) => ![...s].some((c) => (c < ' ' && c !== '\t') || c === '\x7f') && s.trim() === s).map((s): [string, string, boolean] => [s, 'random ascii', false]),
  fc.constantFrom(...CTL_SUFFIXES).map((c): [string, string, boolean] => [`key${c}x`, `CTL ${JSON.stringify(c)}`, true]),
);

function idempotencyHeaders(): fc.Arbitrary<HeaderSet> {
  return oneof(
    { weight: 30, arbitrary: noBiasKey.map((n) => H('Idempotency-Key', `fz-${hex(n)}`, '')) },
    { weight: 3, arbitrary: noBiasKey.map((n) => H('Idempotency-Key', `"fz-${hex(n)}"`, 'key: quoted')) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 3 }).map((i) => H('Idempotency-Key', `pool-${i}`, 'key: pooled')) },
    { weight: 2, arbitrary: fc.constant<HeaderSet>({ ...NONE, tags: ['no idempotency key'] }) },
    { weight: 8, arbitrary: keyLikeValue.map(([v, tag, layer]) => H('Idempotency-Key', v, `key: ${tag}`, layer)) },
    {
      weight: 1,
      arbitrary: fc.tuple(noBiasKey, noBiasKey).map(([a, b]) => ({
        headers: [['Idempotency-Key', `fz-${hex(a)}`], ['Idempotency-Key', `fz-${hex(b)}`]] as [string, string][],
        tags: ['key: two headers'],
        httpLayer: false,
      })),
    },
  );
}

const requestIdHeaders: fc.Arbitrary<HeaderSet> = oneof(
  { weight: 12, arbitrary: fc.constant(NONE) },
  { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9._:-]{1,128}$/).map((v) => H('X-Request-Id', v, 'request id: valid')) },
  { weight: 4, arbitrary: keyLikeValue.map(([v, tag, layer]) => H('X-Request-Id', v, `request id: ${tag}`, layer)) },
  { weight: 1, arbitrary: fc.constant<HeaderSet>({ headers: [['X-Request-Id', 'a'], ['X-Request-Id', 'b']], tags: ['request id: two headers'], httpLayer: false }) },
);

const CONTENT_TYPES = [
  'application/json; charset=utf-8',
  'application/json; charset=UTF-8',
  'application/json;charset=utf-8',
  'application/json; charset="utf-8"',
  'application/json; charset=latin1',
  'application/json; charset=iso-8859-1',
  'application/json; charset=utf-16',
  'application/json; charset=utf-16le',
  'application/json; charset=utf-7',
  'application/json; charset=utf-99',
  'application/json; charset=',
  'application/json; charset',
  'application/json;;',
  'application/json; charset=utf-8; charset=latin1',
  'application/json; boundary=x',
  `application/json; x=${'y'.repeat(3000)}`,
  'APPLICATION/JSON',
  'Application/Json',
  'application/jsonx',
  'application/json+x',
  'application/merge-patch+json',
  'application/problem+json',
  'application/vnd.api+json',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=fuzz',
  'multipart/form-data; boundary=fuzz',
  'multipart/form-data',
  'text/plain',
  'text/json',
  'text/html',
  'application/xml',
  'application/octet-stream',
  '*/*',
  'application/*',
  'json',
  '',
  ' ',
  ';',
  '/',
  'application/',
  '\xe9/json',
  utf8('application/jsön'),
];

function contentTypeHeaders(): fc.Arbitrary<HeaderSet> {
  return oneof(
    { weight: 20, arbitrary: fc.constant(H('Content-Type', 'application/json', '')) },
    { weight: 2, arbitrary: fc.constant<HeaderSet>({ ...NONE, tags: ['no content-type'] }) },
    { weight: 8, arbitrary: fc.constantFrom(...CONTENT_TYPES).map((v) => H('Content-Type', v, `content-type: ${v.slice(0, 60)}`)) },
    { weight: 1, arbitrary: fc.constant<HeaderSet>({ headers: [['Content-Type', 'application/json'], ['Content-Type', 'text/plain']], tags: ['two content-types'], httpLayer: false }) },
  );
}

type Encoding = 'none' | 'gzip' | 'deflate' | 'br' | 'gzip-bad' | 'bomb' | 'unknown' | 'identity' | 'gzip,gzip' | 'utf16le';
const encodingArb: fc.Arbitrary<Encoding> = oneof(
  { weight: 30, arbitrary: fc.constant('none' as const) },
  { weight: 1, arbitrary: fc.constantFrom<Encoding>('gzip', 'deflate', 'br', 'gzip-bad', 'bomb', 'unknown', 'identity', 'gzip,gzip', 'utf16le') },
);

/** The body as sent under `encoding`, with the headers that say so. */
function encodeBody(text: string, encoding: Encoding): { body: string; headers: [string, string][]; tag?: string } {
  const raw = Buffer.from(text, 'latin1');
  switch (encoding) {
    case 'none':
      return { body: text, headers: [] };
    case 'identity':
      return { body: text, headers: [['Content-Encoding', 'identity']], tag: 'encoding identity' };
    case 'gzip':
      return { body: zlib.gzipSync(raw).toString('latin1'), headers: [['Content-Encoding', 'gzip']], tag: 'gzip' };
    case 'deflate':
      return { body: zlib.deflateSync(raw).toString('latin1'), headers: [['Content-Encoding', 'deflate']], tag: 'deflate' };
    case 'br':
      return { body: zlib.brotliCompressSync(raw).toString('latin1'), headers: [['Content-Encoding', 'br']], tag: 'brotli' };
    case 'gzip-bad':
      return { body: text, headers: [['Content-Encoding', 'gzip']], tag: 'gzip header, plain body' };
    case 'bomb': {
      const big = Buffer.concat([Buffer.from('{"description":"'), Buffer.alloc(2 * 1024 * 1024, 'a'), Buffer.from('"}')]);
      return { body: zlib.gzipSync(big).toString('latin1'), headers: [['Content-Encoding', 'gzip']], tag: 'gzip bomb (2 MiB inflated)' };
    }
    case 'unknown':
      return { body: text, headers: [['Content-Encoding', 'x-fuzz']], tag: 'unknown encoding' };
    case 'gzip,gzip':
      return { body: zlib.gzipSync(zlib.gzipSync(raw)).toString('latin1'), headers: [['Content-Encoding', 'gzip, gzip']], tag: 'gzip twice' };
    case 'utf16le':
      return {
        body: Buffer.from(Buffer.from(text, 'latin1').toString('utf8'), 'utf16le').toString('latin1'),
        headers: [],
        tag: 'utf-16le bytes',
      };
  }
}

/** Odd but harmless headers, and HTTP-level ones Node answers itself (no Host, an unknown Expect). */
const extraHeaders: fc.Arbitrary<HeaderSet> = oneof(
  { weight: 20, arbitrary: fc.constant(NONE) },
  {
    weight: 4,
    arbitrary: fc.constantFrom<[string, string]>(
      ['Accept', 'text/html'],
      ['Accept', 'application/xml'],
      ['Accept', ''],
      ['Accept-Encoding', 'gzip, br'],
      ['Accept-Charset', 'latin1'],
      ['Cookie', 'a=b'],
      ['X-Forwarded-For', '1.2.3.4, ::1'],
      ['X-HTTP-Method-Override', 'DELETE'],
      ['Range', 'bytes=0-10'],
      ['If-None-Match', '*'],
      ['Origin', 'http://evil.example'],
      ['Expect', '100-continue'],
      ['Connection', 'keep-alive'],
      ['Upgrade', 'h2c'],
      ['__proto__', 'x'],
      ['constructor', 'x'],
      ['Idempotent-Replayed', 'true'],
      ['X-Fuzz', '\xe9\xff'],
      ['X-Fuzz', 'x'.repeat(8000)],
    ).map(([n, v]) => H(n, v, `header ${n}: ${v.slice(0, 20)}`)),
  },
  { weight: 1, arbitrary: fc.constantFrom('fuzz', '200-ok').map((v) => H('Expect', v, `expect: ${v}`, true)) },
  { weight: 1, arbitrary: fc.constant(H('Expect', '100-Continue, x', 'expect: 100-continue among others')) },
  { weight: 1, arbitrary: fc.integer({ min: 60, max: 400 }).map((n) => ({ headers: Array.from({ length: n }, (_, i): [string, string] => [`X-F${i}`, 'v'.repeat(60)]), tags: [`${n} extra headers`], httpLayer: n * 70 > 16000 })) },
);

// ---------------------------------------------------------------------------------------------------
// Query strings, paths, methods.

const QUERY_NAMES = ['limit', 'starting_after', 'limit[]', 'limit[0]', 'limit[a]', 'starting_after[]', 'LIMIT', 'Limit', 'foo', '__proto__', 'constructor', 'hasOwnProperty', 'toString', 'a.b', '', '%20limit', 'limit%20', 'lim%69t', 'limit%00', '%'];

function limitValue(): fc.Arbitrary<string> {
  return oneof(
    { weight: 3, arbitrary: fc.integer({ min: -5, max: 105 }).map(String) },
    {
      weight: 4,
      arbitrary: fc.constantFrom('', '0', '1', '100', '101', '1.5', '1.0', '1e1', '1e2', '1e3', '0x10', '0b11', '0o7', '%205', '5%20', '+5', '-0', 'NaN', 'Infinity', '-Infinity', 'null', 'undefined', 'true', '[]', '{}', '9'.repeat(400), '%00', '5%00', '%35', '%', '%zz', '%E2%82%AC', '1,2', "1'%20or%20'1'='1", '10;select%20pg_sleep(5)', '%C0%80', '%ED%A0%80', '5e-1', '.5e1'),
    },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }).map((s) => pct(utf8(s))) },
  );
}

function startingAfterValue(chargeIds: string[], refundIds: string[]): fc.Arbitrary<string> {
  return oneof(
    { weight: 3, arbitrary: fc.constantFrom(...chargeIds, ...refundIds) },
    { weight: 2, arbitrary: fc.stringMatching(/^ch_[A-Za-z0-9_-]{1,64}$/) },
    { weight: 3, arbitrary: fc.constantFrom('ch_', 'ch_a', `ch_${'a'.repeat(64)}`, `ch_${'a'.repeat(65)}`, 'ch_../', 'ch_%00', 'ch_a%00', "ch_1'%20or%20'1'='1", 'CH_abc', 're_abc', '', '%E2%82%AC', 'ch_%F0%9F%98%80', '%ED%A0%80', '%', 'ch_a%2F..%2F..') },
    { weight: 1, arbitrary: fc.constantFrom(...SQL).map((s) => pct(utf8(s))) },
  );
}

function queryString(chargeIds: string[], refundIds: string[], focused: boolean): fc.Arbitrary<{ query: string; tags: string[]; httpLayer: boolean }> {
  const pair = oneof(
    { weight: 4, arbitrary: limitValue().map((v) => `limit=${v}`) },
    { weight: 4, arbitrary: startingAfterValue(chargeIds, refundIds).map((v) => `starting_after=${v}`) },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...QUERY_NAMES), oneof(limitValue(), startingAfterValue(chargeIds, refundIds))).map(([n, v]) => `${n}=${v}`) },
    { weight: 1, arbitrary: fc.constantFrom('limit', 'starting_after', '=', '==', 'limit==5', 'limit=1=2', '&', '&&', ';', 'limit=5;starting_after=x', '?', '#x', '+', '%20=%20') },
  );
  return oneof(
    { weight: focused ? 2 : 20, arbitrary: fc.constant<{ query: string; tags: string[]; httpLayer: boolean }>({ query: '', tags: [], httpLayer: false }) },
    { weight: focused ? 10 : 2, arbitrary: fc.array(pair, { minLength: 1, maxLength: 5 }).map((ps) => ({ query: `?${ps.join('&')}`, tags: ['query'], httpLayer: false })) },
    {
      weight: focused ? 1 : 0,
      arbitrary: fc.tuple(fc.integer({ min: 100, max: 2000 }), fc.constantFrom('limit=1', 'a=1', 'starting_after=ch_x', 'limit[]=1')).map(([n, p]) => {
        const query = `?${Array.from({ length: n }, () => p).join('&')}`;
        return { query, tags: [`query: ${n}× ${p}`], httpLayer: query.length > 15000 };
      }),
    },
    {
      weight: focused ? 1 : 0,
      arbitrary: fc.integer({ min: 1000, max: 30000 }).map((n) => ({ query: `?limit=${'9'.repeat(n)}`, tags: [`query: ${n}-digit limit`], httpLayer: n > 15000 })),
    },
  );
}

const ID_SEGMENTS = [
  '..', '.', '%2e%2e', '%2E%2E%2F', '..%2f..%2fetc%2fpasswd', '%00', 'ch_abc%00', 're_abc%00', '%', '%zz', '%E0%A4%A', '%C0%80', '%ED%A0%80',
  '%F0%9F%98%80', '%FF', `ch_${'a'.repeat(64)}`, `ch_${'a'.repeat(65)}`, `re_${'a'.repeat(65)}`, 'a'.repeat(8000), "ch_1'%20or%20'1'='1", "ch_1';drop%20table%20charges;--",
  '%20', '+', 'ch_abc;x=1', 'ch_abc%3Bx', 'ch_abc#x', '', '%2F', 'ch_abc/', 'ch_abc/extra', '*', '~', 'ch_', 're_', 'ch_%E2%82%AC', 'CH_abc', 'null', 'undefined', '__proto__', 'constructor',
];

function idSegment(ownIds: string[], otherIds: string[], prefix: string): fc.Arbitrary<{ seg: string; tags: string[]; httpLayer: boolean }> {
  return oneof(
    { weight: 4, arbitrary: fc.constantFrom(...ownIds).map((seg) => ({ seg, tags: ['id: known'], httpLayer: false })) },
    { weight: 1, arbitrary: fc.constantFrom(...otherIds).map((seg) => ({ seg, tags: ['id: other kind'], httpLayer: false })) },
    { weight: 2, arbitrary: fc.stringMatching(new RegExp(`^${prefix}_[A-Za-z0-9_-]{1,64}$`)).map((seg) => ({ seg, tags: ['id: unknown'], httpLayer: false })) },
    { weight: 6, arbitrary: fc.constantFrom(...ID_SEGMENTS).map((seg) => ({ seg, tags: [`id: ${seg.slice(0, 30)}`], httpLayer: false })) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 10 }).map((s) => ({ seg: pct(utf8(s)), tags: ['id: unicode'], httpLayer: false })) },
    { weight: 1, arbitrary: fc.constantFrom(...SQL).map((s) => ({ seg: pct(utf8(s)), tags: ['id: sql'], httpLayer: false })) },
    { weight: 1, arbitrary: fc.constantFrom('\xe9', utf8('ü'), 'a b', '\x00', '\x7f', '"').map((s) => ({ seg: `${prefix}_${s}`, tags: [`id: raw ${JSON.stringify(s)}`], httpLayer: true })) },
    { weight: 1, arbitrary: fc.constant<{ seg: string; tags: string[]; httpLayer: boolean }>({ seg: 'a'.repeat(20000), tags: ['id: past header limit'], httpLayer: true }) },
  );
}

function pathVariant(path: string): fc.Arbitrary<{ target: string; tags: string[]; httpLayer: boolean }> {
  return oneof(
    { weight: 30, arbitrary: fc.constant<{ target: string; tags: string[]; httpLayer: boolean }>({ target: path, tags: [], httpLayer: false }) },
    {
      weight: 3,
      arbitrary: fc
        .constantFrom(
          `${path}/`,
          path.toUpperCase(),
          `/${path}`,
          path.replace('/v1/', '/v1//'),
          `/.${path}`,
          `${path}/..`,
          path.replace(/[a-z]$/, (c) => `%${c.charCodeAt(0).toString(16)}`),
          `${path};x=1`,
          `${path}%00`,
          `${path}%2F`,
          `${path}?`,
          `${path}#frag`,
          `http://127.0.0.1${path}`,
          `HTTP://LOCALHOST${path}`,
          `${path}/${'x'.repeat(5000)}`,
        )
        .map((target) => ({ target, tags: [`path: ${target.slice(0, 40)}`], httpLayer: false })),
    },
    // Not origin-form: Node's parser may refuse them.
    { weight: 1, arbitrary: fc.constantFrom(path.slice(1), '*', `//${path}`).map((target) => ({ target, tags: [`path: ${target}`], httpLayer: true })) },
    { weight: 1, arbitrary: fc.constantFrom(`${path}\xe9`, `${path} x`, `${path}\x00`, `${path}\t`).map((target) => ({ target, tags: [`path raw: ${JSON.stringify(target)}`], httpLayer: true })) },
  );
}

function methodArb(method: string): fc.Arbitrary<{ method: string; tags: string[]; httpLayer: boolean }> {
  return oneof(
    { weight: 40, arbitrary: fc.constant<{ method: string; tags: string[]; httpLayer: boolean }>({ method, tags: [], httpLayer: false }) },
    { weight: 2, arbitrary: fc.constantFrom('GET', 'POST', 'HEAD', 'OPTIONS', 'PUT', 'PATCH', 'DELETE', 'TRACE', 'PROPFIND', 'PURGE', 'QUERY').map((m) => ({ method: m, tags: [`method ${m}`], httpLayer: false })) },
    { weight: 1, arbitrary: fc.constantFrom(method.toLowerCase(), 'FOO', 'G ET', 'GET\x00').map((m) => ({ method: m, tags: [`method ${JSON.stringify(m)}`], httpLayer: true })) },
  );
}

// ---------------------------------------------------------------------------------------------------
// Requests per endpoint.

export interface Known {
  apiKey: string;
  chargeIds: string[];
  refundIds: string[];
  host: string;
}

function buildInput(
  endpoint: Endpoint,
  known: Known,
  parts: {
    method: { method: string; tags: string[]; httpLayer: boolean };
    target: { target: string; tags: string[]; httpLayer: boolean };
    headers: HeaderSet;
    body: Body;
    encoding: Encoding;
    chunked: boolean;
    host: 'normal' | 'none' | 'odd';
  },
): FuzzInput {
  const { method, target, headers, body, encoding, chunked, host } = parts;
  const tags = [...method.tags, ...target.tags, ...headers.tags, ...body.tags];
  const list: [string, string][] = [];
  let httpLayer = method.httpLayer || target.httpLayer || headers.httpLayer;
  if (host === 'normal') list.push(['Host', known.host]);
  else if (host === 'odd') {
    list.push(['Host', 'evil.example:1']);
    tags.push('odd host');
  } else {
    tags.push('no host');
    httpLayer = true;
  }
  list.push(...headers.headers);
  let sentBody: string | undefined;
  if (body.text !== undefined) {
    const encoded = encodeBody(body.text, encoding);
    sentBody = encoded.body;
    list.push(...encoded.headers);
    if (encoded.tag) tags.push(encoded.tag);
  }
  if (chunked && sentBody !== undefined) tags.push('chunked');
  return {
    endpoint,
    tags: tags.filter(Boolean),
    method: method.method,
    target: target.target,
    headers: list,
    body: sentBody,
    chunked: chunked && sentBody !== undefined,
    httpLayer,
  };
}

export function inputArb(endpoint: Endpoint, known: Known, httpLayerOnly: boolean): fc.Arbitrary<FuzzInput> {
  const [method, path] = endpoint.split(' ') as [string, string];
  const isV1 = path.startsWith('/v1');
  const isPost = method === 'POST';
  const chargeFields = validChargeFields;
  const refundFields = validRefundFields(known.chargeIds);

  const targetArb: fc.Arbitrary<{ target: string; tags: string[]; httpLayer: boolean }> =
    endpoint === 'GET /v1/charges/:id' || endpoint === 'GET /v1/refunds/:id'
      ? fc
          .tuple(
            endpoint === 'GET /v1/charges/:id' ? idSegment(known.chargeIds, known.refundIds, 'ch') : idSegment(known.refundIds, known.chargeIds, 're'),
            queryString(known.chargeIds, known.refundIds, false),
          )
          .map(([id, q]) => ({
            target: `${path.replace(':id', id.seg)}${q.query}`,
            tags: [...id.tags, ...q.tags],
            httpLayer: id.httpLayer || q.httpLayer,
          }))
      : fc.tuple(pathVariant(path), queryString(known.chargeIds, known.refundIds, endpoint === 'GET /v1/charges')).map(([p, q]) => ({
          target: `${p.target}${q.query}`,
          tags: [...p.tags, ...q.tags],
          httpLayer: p.httpLayer || q.httpLayer,
        }));

  const bodyArb: fc.Arbitrary<Body> = isPost
    ? oneof(
        { weight: 12, arbitrary: endpoint === 'POST /v1/charges' ? postBody(chargeFields, 'charge') : postBody(refundFields, 'refund') },
        { weight: 1, arbitrary: endpoint === 'POST /v1/charges' ? postBody(refundFields, 'refund') : postBody(chargeFields, 'charge') },
        { weight: 1, arbitrary: fc.constant<Body>({ text: undefined, tags: ['no body'] }) },
      )
    : oneof(
        { weight: 12, arbitrary: fc.constant<Body>({ text: undefined, tags: [] }) },
        { weight: 1, arbitrary: oddBody.map((b) => ({ ...b, tags: ['body on GET', ...b.tags] })) },
        { weight: 1, arbitrary: hugeBody(chargeFields).map((b) => ({ ...b, tags: ['body on GET', ...b.tags] })) },
      );

  // A third of the requests carry the headers of a well-behaved client, so that bodies reach the operations.
  const cleanHeaders = fc.tuple(noBiasKey).map(([n]) => {
    const all = merge(
      H('Authorization', `Bearer ${known.apiKey}`, ''),
      isPost ? H('Idempotency-Key', `fz-${hex(n)}`, '') : NONE,
      H('Content-Type', 'application/json', ''),
    );
    return { ct: all, all };
  });
  const fuzzedHeaders = fc
    .tuple(
      isV1 ? authHeaders(known.apiKey) : oneof({ weight: 5, arbitrary: fc.constant(NONE) }, { weight: 1, arbitrary: authHeaders(known.apiKey) }),
      isPost ? idempotencyHeaders() : oneof({ weight: 8, arbitrary: fc.constant(NONE) }, { weight: 1, arbitrary: idempotencyHeaders() }),
      requestIdHeaders,
      contentTypeHeaders(),
      extraHeaders,
      fc.nat(),
    )
    .map(([auth, key, rid, ct, extra, order]) => {
      const parts = [auth, key, rid, ct, extra];
      // Header order is part of the input too.
      const rotated = [...parts.slice(order % parts.length), ...parts.slice(0, order % parts.length)];
      return { ct, all: merge(...rotated) };
    });
  const headersArb = oneof({ weight: 1, arbitrary: cleanHeaders }, { weight: 2, arbitrary: fuzzedHeaders });

  const parts = fc.record({
    method: methodArb(method),
    target: targetArb,
    headers: headersArb,
    body: bodyArb,
    encoding: encodingArb,
    chunked: oneof({ weight: 12, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    host: oneof({ weight: 40, arbitrary: fc.constant('normal' as const) }, { weight: 1, arbitrary: fc.constantFrom('none' as const, 'odd' as const) }),
    // A body sent without the Content-Type the headers chose is what "no content-type" means.
  });

  const fuzzed = parts.map(({ method: m, target, headers, body, encoding, chunked, host }) => {
    const headerParts = body.text === undefined
      ? { ...headers.all, headers: headers.all.headers.filter(([n]) => n !== 'Content-Type'), tags: headers.all.tags.filter((t) => !t.startsWith('content-type')) }
      : headers.all;
    return buildInput(endpoint, known, { method: m, target, headers: headerParts, body, encoding, chunked, host });
  });

  // The same few keys with the same few bodies again and again, fields reordered and spaced differently:
  // the first is a new request, the rest replays of its stored answer (and must write nothing).
  const replayed = fc
    .record({ slot: fc.integer({ min: 0, max: 3 }), order: fc.nat(), ws: fc.constantFrom('', ' ', '\n  ', '\t'), quoted: fc.boolean() })
    .map(({ slot, order, ws, quoted }) => {
      const fields: Field[] =
        endpoint === 'POST /v1/refunds'
          ? [['"charge"', jstr(known.chargeIds[slot % 3]!)], ['"amount"', String(slot + 1)], ['"reason"', '"requested_by_customer"']]
          : [['"amount"', String(1000 + slot)], ['"currency"', '"usd"'], ['"source"', jstr(TEST_SOURCES[slot % TEST_SOURCES.length]!)], ['"metadata"', `{"slot":"${slot}"}`]];
      const rotated = [...fields.slice(order % fields.length), ...fields.slice(0, order % fields.length)];
      const key = `replay-${endpoint.replace(/\W+/g, '-')}-${slot}`;
      return buildInput(endpoint, known, {
        method: { method, tags: [], httpLayer: false },
        target: { target: path, tags: [], httpLayer: false },
        headers: merge(H('Authorization', `Bearer ${known.apiKey}`, ''), H('Idempotency-Key', quoted ? `"${key}"` : key, `replay slot ${slot}${quoted ? ' (key quoted)' : ''}`), H('Content-Type', 'application/json', '')),
        body: { text: `{${ws}${rotated.map(([k, v]) => `${k}:${ws}${v}`).join(`,${ws}`)}${ws}}`, tags: [] },
        encoding: 'none',
        chunked: false,
        host: 'normal',
      });
    });
  const arb = isPost ? oneof({ weight: 15, arbitrary: fuzzed }, { weight: 1, arbitrary: replayed }) : fuzzed;

  if (!httpLayerOnly) return arb.map(withToString);
  // HTTP-level malformations only: every input carries at least one.
  const malformed = fc
    .tuple(
      arb,
      oneof(
        fc.constantFrom(...CTL_SUFFIXES).map((c) => ({ name: 'X-Request-Id', value: `r${c}x`, tag: `CTL ${JSON.stringify(c)} in a header` })),
        fc.constant({ name: 'X-Fuzz', value: 'x'.repeat(20000), tag: 'headers past 16 KiB' }),
        fc.constantFrom('fuzz', '200-ok').map((v) => ({ name: 'Expect', value: v, tag: `expect: ${v}` })),
        fc.constant({ name: '', value: 'no host', tag: 'no host' }),
        fc.constantFrom('FOO', 'get', 'G ET').map((m) => ({ name: ':method', value: m, tag: `method ${m}` })),
        fc.constantFrom(`${path}\xe9`, `${path} x`, `${path}\x00`).map((t) => ({ name: ':target', value: t, tag: `raw target ${JSON.stringify(t)}` })),
        fc.constant({ name: 'Content-Length', value: 'abc', tag: 'content-length abc' }),
        fc.constant({ name: 'Transfer-Encoding', value: 'chunked', tag: 'both content-length and chunked' }),
      ),
    )
    .map(([input, m]) => {
      const out: FuzzInput = { ...input, headers: [...input.headers], tags: [...input.tags, m.tag], httpLayer: true };
      if (m.tag === 'no host') out.headers = out.headers.filter(([n]) => n !== 'Host');
      else if (m.name === ':method') out.method = m.value;
      else if (m.name === ':target') out.target = m.value;
      else if (m.name === 'Content-Length') {
        out.headers.push(['Content-Length', m.value]);
        out.body ??= '{}';
        out.chunked = false;
      } else if (m.name === 'Transfer-Encoding') {
        out.body ??= '{}';
        out.headers.push(['Content-Length', String(out.body.length)], ['Transfer-Encoding', 'chunked']);
        out.chunked = false;
      } else out.headers.push([m.name, m.value]);
      return out;
    });
  return malformed.map(withToString);
}

/** Node's HTTP parser refuses a head (request line and headers) past 16 KiB. */
const MAX_HEAD = 16 * 1024;

function withToString(input: FuzzInput): FuzzInput {
  const head = input.method.length + input.target.length + 12 + input.headers.reduce((n, [k, v]) => n + k.length + v.length + 4, 0);
  if (head > MAX_HEAD - 256) {
    input.httpLayer = true;
    if (!input.tags.includes('head past 16 KiB')) input.tags.push('head past 16 KiB');
  }
  Object.defineProperty(input, fc.toStringMethod, { value: () => describeInput(input), enumerable: false });
  return input;
}

// ---------------------------------------------------------------------------------------------------
// Sending.

/** The request's bytes on the wire, for a bare socket (and for the report). */
function wireBytes(input: FuzzInput): Buffer {
  const headers = [...input.headers];
  const names = new Set(headers.map(([n]) => n.toLowerCase()));
  if (!names.has('connection')) headers.push(['Connection', 'close']);
  let body = input.body === undefined ? undefined : Buffer.from(input.body, 'latin1');
  if (body && input.chunked) {
    headers.push(['Transfer-Encoding', 'chunked']);
    body = body.length ? Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]) : Buffer.from('0\r\n\r\n');
  } else if (body && !names.has('content-length')) {
    headers.push(['Content-Length', String(body.length)]);
  }
  const head = `${input.method} ${input.target} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body ?? Buffer.alloc(0)]);
}

/** Reads one HTTP/1.1 response from `buf`; undefined while incomplete. */
function parseResponse(buf: Buffer, method: string, closed: boolean): Omit<Answer, 'ms' | 'transport'> | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return closed ? { status: 0, headers: {}, body: buf, error: `connection closed mid-headers: ${JSON.stringify(buf.toString('latin1').slice(0, 200))}` } : undefined;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) {
      const name = line.slice(0, i).trim().toLowerCase();
      const value = line.slice(i + 1).trim();
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
  }
  const rest = buf.subarray(end + 4);
  if (status === 100) return parseResponse(rest, method, closed); // 100 Continue, then the real answer
  // An answer to HEAD has no body: whatever comes before the close is kept, to be reported.
  if (method === 'HEAD') return closed ? { status, headers, body: rest } : undefined;
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) return { status, headers, body: Buffer.alloc(0) };
  if (headers['content-length'] !== undefined) {
    const length = Number(headers['content-length']);
    if (rest.length >= length) return { status, headers, body: rest.subarray(0, length) };
    return closed ? { status, headers, body: rest, error: `body cut short: ${rest.length} of ${length} bytes` } : undefined;
  }
  if ((headers['transfer-encoding'] ?? '').toLowerCase().includes('chunked')) {
    const chunks: Buffer[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n', at);
      if (lineEnd < 0) break;
      const size = parseInt(rest.subarray(at, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size)) return { status, headers, body: Buffer.concat(chunks), error: 'bad chunk size' };
      if (size === 0) return { status, headers, body: Buffer.concat(chunks) };
      if (rest.length < lineEnd + 2 + size + 2) break;
      chunks.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    return closed ? { status, headers, body: Buffer.concat(chunks), error: 'chunked body cut short' } : undefined;
  }
  return closed ? { status, headers, body: rest } : undefined;
}

function sendSocket(host: string, port: number, input: FuzzInput, timeoutMs: number): Promise<Answer> {
  const bytes = wireBytes(input);
  const started = performance.now();
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (answer: Omit<Answer, 'ms' | 'transport'>, at = performance.now()) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(grace);
      socket.destroy();
      resolve({ ...answer, ms: at - started, transport: 'socket' });
    };
    const socket = net.connect(port, host);
    const timer = setTimeout(() => finish({ status: 0, headers: {}, body: buf, error: `no answer within ${timeoutMs} ms` }), timeoutMs);
    // write, not end: a half-closed request is dropped by Node's server before it answers.
    socket.on('connect', () => socket.write(bytes));
    let grace: NodeJS.Timeout | undefined;
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const answer = parseResponse(buf, input.method, false);
      if (answer) finish(answer);
      // An answer to HEAD is complete at its blank line, but a body sent after it is to be seen: a short
      // wait (or the close, with Connection: close) rather than the keep-alive timeout.
      else if (input.method === 'HEAD' && !grace && buf.includes('\r\n\r\n')) {
        const headAt = performance.now();
        grace = setTimeout(() => finish(parseResponse(buf, input.method, true)!, headAt), 100);
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const answer = parseResponse(buf, input.method, true);
      finish(answer && answer.status ? answer : { status: 0, headers: {}, body: buf, error: `socket error ${err.code ?? err.message}` });
    });
    socket.on('close', () => {
      const answer = parseResponse(buf, input.method, true);
      finish(answer ?? { status: 0, headers: {}, body: buf, error: 'closed without an answer' });
    });
  });
}

function sendHttp(host: string, port: number, input: FuzzInput, timeoutMs: number): Promise<Answer> | undefined {
  const headers = [...input.headers];
  const body = input.body === undefined ? undefined : Buffer.from(input.body, 'latin1');
  const names = new Set(headers.map(([n]) => n.toLowerCase()));
  // Framing said outright: node:http would send a GET's body with neither header, as the next request.
  if (body && !input.chunked && !names.has('content-length')) headers.push(['Content-Length', String(body.length)]);
  if (body && input.chunked && !names.has('transfer-encoding')) headers.push(['Transfer-Encoding', 'chunked']);
  if (!names.has('connection')) headers.push(['Connection', 'close']);
  let req: http.ClientRequest;
  const started = performance.now();
  try {
    req = http.request({ host, port, method: input.method, path: input.target, headers: headers.flat(), agent: false, setHost: false });
  } catch {
    return undefined; // node:http refuses these bytes: a bare socket sends them
  }
  return new Promise((resolve) => {
    let done = false;
    const finish = (answer: Omit<Answer, 'ms' | 'transport'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve({ ...answer, ms: performance.now() - started, transport: 'http' });
    };
    const timer = setTimeout(() => finish({ status: 0, headers: {}, body: Buffer.alloc(0), error: `no answer within ${timeoutMs} ms` }), timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => finish({ status: 0, headers: {}, body: Buffer.alloc(0), error: `request error ${err.code ?? err.message}` }));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => finish({ status: res.statusCode ?? 0, headers: flatHeaders(res.headers), body: Buffer.concat(chunks), error: `response error ${err.message}` }));
      res.on('aborted', () => finish({ status: res.statusCode ?? 0, headers: flatHeaders(res.headers), body: Buffer.concat(chunks), error: 'response aborted' }));
      res.on('end', () => finish({ status: res.statusCode ?? 0, headers: flatHeaders(res.headers), body: Buffer.concat(chunks) }));
    });
    if (body && input.chunked) {
      if (body.length) req.write(body);
      req.end();
    } else req.end(body);
  });
}

const flatHeaders = (h: http.IncomingHttpHeaders): Record<string, string> =>
  Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : String(v)]));

export async function send(baseUrl: string, input: FuzzInput, timeoutMs: number): Promise<Answer> {
  const url = new URL(baseUrl);
  const host = url.hostname;
  const port = Number(url.port);
  // HEAD over a bare socket, so that bytes after the head of the answer (a body where none may be) are seen.
  // And a method not in capitals that way too: node:http would capitalise it.
  if (input.method === 'HEAD' || input.method !== input.method.toUpperCase()) return sendSocket(host, port, input, timeoutMs);
  return (await sendHttp(host, port, input, timeoutMs)) ?? sendSocket(host, port, input, timeoutMs);
}

// ---------------------------------------------------------------------------------------------------
// Checking.

const BUSINESS_REFUSALS = new Set(['charge_not_refundable', 'refund_exceeds_charge']);

/** What the answer says was written: exact deltas of the account's rows. */
function expectedDeltas(input: FuzzInput, answer: Answer, body: Record<string, unknown> | undefined): { deltas: Record<string, number>; why: string } {
  const none = { deltas: { idempotency_keys: 0, charges: 0, refunds: 0 }, why: 'refused or read-only: writes nothing' };
  if (input.method !== 'POST' || answer.headers['idempotent-replayed'] === 'true' || !answer.headers['x-request-id']) return none;
  const location = answer.headers.location ?? '';
  if ([201, 202, 402].includes(answer.status)) {
    if (location.startsWith('/v1/charges/')) return { deltas: { idempotency_keys: 1, charges: 1, refunds: 0 }, why: `new charge ${answer.status}` };
    if (location.startsWith('/v1/refunds/')) return { deltas: { idempotency_keys: 1, charges: 0, refunds: 1 }, why: `new refund ${answer.status}` };
  }
  const code = typeof body?.code === 'string' ? body.code : '';
  const detail = typeof body?.detail === 'string' ? body.detail : '';
  if ((answer.status === 409 && BUSINESS_REFUSALS.has(code)) || (answer.status === 404 && code === 'not_found' && detail.startsWith('No charge ') && /^\/v1\/refunds\/?(\?|$)/i.test(pathOf(input.target)))) {
    return { deltas: { idempotency_keys: 1, charges: 0, refunds: 0 }, why: `refund refused by a business rule (${answer.status} ${code}), stored` };
  }
  return none;
}

const pathOf = (target: string) => {
  try {
    return new URL(target, 'http://x').pathname + '?';
  } catch {
    return target;
  }
};

interface Problem {
  kind: string;
  text: string;
}

interface Checked {
  problems: Problem[];
  label: string;
  body?: Record<string, unknown>;
}

function checkAnswer(input: FuzzInput, answer: Answer, options: { deadlineMs: number; httpLayer: 'bare-ok' | 'problem' }): Checked {
  const problems: Problem[] = [];
  const problem = (kind: string, text: string) => problems.push({ kind, text });
  if (answer.error && answer.status === 0) {
    const timeout = answer.error.startsWith('no answer within');
    // A server may close on a request it cannot read while the client still writes: the client then sees
    // a reset instead of the answer. Never a hang, though.
    if (!timeout && input.httpLayer && /ECONNRESET|EPIPE|closed without an answer/.test(answer.error)) return { problems, label: 'reset (http-level)' };
    problem(timeout ? 'hang' : 'no answer', `no answer: ${answer.error}`);
    return { problems, label: timeout ? 'timeout' : 'no answer' };
  }
  if (answer.error) problem('broken answer', `broken answer: ${answer.error}`);
  const status = answer.status;
  let label = String(status);
  if (answer.ms >= options.deadlineMs) problem('slow', `answered in ${answer.ms.toFixed(0)} ms, not under the ${options.deadlineMs} ms deadline`);
  if (status >= 500) problem(`5xx ${status}`, `status ${status} (a 5xx)`);
  else if (status === 304 && input.headers.some(([n]) => /^if-(none-match|modified-since)$/i.test(n))) label = '304';
  else if (status < 200 || (status >= 300 && status < 400)) problem(`status ${status}`, `unexpected status ${status}`);

  const contentType = answer.headers['content-type'] ?? '';
  const text = answer.body.toString('utf8');
  let body: Record<string, unknown> | undefined;
  const parsed = () => {
    try {
      const v = JSON.parse(text) as unknown;
      return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  };
  const bare = !answer.headers['x-request-id'];
  const isHead = input.method === 'HEAD';
  if (isHead && answer.body.length) problem('body in answer to HEAD', `the answer to HEAD carries ${answer.body.length} body bytes`);

  if (status >= 200 && status < 300) {
    if (/json/.test(contentType) && !isHead) {
      body = parsed();
      if (!body && !/^\[/.test(text.trim())) problem('2xx not json', `a ${status} says ${contentType} but its body is not JSON`);
    }
  } else if (status >= 400 && status < 500) {
    if (bare && input.httpLayer && options.httpLayer === 'bare-ok') {
      label = `${status} (node)`;
    } else {
      if (!/^application\/problem\+json/.test(contentType)) {
        const shown = isHead ? '' : `, body ${JSON.stringify(text.slice(0, 200))}`;
        problem(`not problem+json ${status}`, `a ${status} without application/problem+json (content-type: ${contentType || 'none'}${shown})`);
      } else if (!isHead) {
        body = parsed();
        if (!body) problem(`body not a problem ${status}`, `a ${status} whose body does not parse as a JSON object: ${JSON.stringify(text.slice(0, 200))}`);
        else {
          if (body.status !== status) problem('body.status', `body.status ${JSON.stringify(body.status)} is not the HTTP status ${status}`);
          if (typeof body.code !== 'string') problem('body.code', `body.code is not a string: ${JSON.stringify(body.code)}`);
          if (typeof body.request_id !== 'string') problem('body.request_id', `body.request_id is not a string: ${JSON.stringify(body.request_id)}`);
          else if (answer.headers['idempotent-replayed'] !== 'true' && body.request_id !== answer.headers['x-request-id']) {
            problem('body.request_id', `body.request_id ${body.request_id} is not the X-Request-Id ${answer.headers['x-request-id']}`);
          }
        }
      }
    }
  }
  return { problems, label, ...(body ? { body } : {}) };
}

// ---------------------------------------------------------------------------------------------------
// Reporting.

function showBytes(s: string, max = 600): string {
  const shown = JSON.stringify(s.length > max ? s.slice(0, max - 150) : s);
  if (s.length <= max) return shown;
  const sha = createHash('sha256').update(Buffer.from(s, 'latin1')).digest('hex').slice(0, 12);
  return `${shown}…(${s.length} bytes in all, sha256 ${sha}, ends ${JSON.stringify(s.slice(-100))})`;
}

/** The input, as a reader (and a replay by hand) needs it; byte strings shown as JSON strings of latin1 chars. */
export function describeInput(input: FuzzInput): string {
  return [
    `${input.endpoint} [${input.tags.join('; ') || 'plain'}]${input.httpLayer ? ' (malformed at the HTTP level)' : ''}`,
    `  ${JSON.stringify(input.method)} ${showBytes(input.target, 300)}`,
    ...input.headers.map(([n, v]) => `  ${n}: ${showBytes(v, 300)}`),
    input.body === undefined ? '  (no body)' : `  body${input.chunked ? ' (chunked)' : ''} ${input.body.length} bytes: ${showBytes(input.body)}`,
  ].join('\n');
}

function describeAnswer(answer: Answer): string {
  const keep = ['content-type', 'x-request-id', 'idempotent-replayed', 'location', 'retry-after'];
  const headers = keep.filter((k) => answer.headers[k] !== undefined).map((k) => `${k}: ${answer.headers[k]}`);
  return [
    `${answer.status || 'none'}${answer.error ? ` (${answer.error})` : ''} in ${answer.ms.toFixed(1)} ms via ${answer.transport}`,
    ...headers.map((h) => `  ${h}`),
    `  ${showBytes(answer.body.toString('latin1'), 500)}`,
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------
// Setup and the run.

async function setup(options: FuzzOptions, host: string): Promise<Known> {
  const post = async (path: string, body: unknown, key: string) => {
    const input: FuzzInput = {
      endpoint: 'POST /v1/charges',
      tags: ['setup'],
      method: 'POST',
      target: path,
      headers: [['Host', host], ...Object.entries(options.auth), ['Idempotency-Key', key], ['Content-Type', 'application/json']],
      body: utf8(JSON.stringify(body)),
      chunked: false,
      httpLayer: false,
    };
    const answer = await send(options.baseUrl, input, 15_000);
    return { status: answer.status, body: JSON.parse(answer.body.toString('utf8') || 'null') as Record<string, unknown> };
  };
  const chargeIds: string[] = [];
  for (const [i, currency] of ['usd', 'jpy', 'eur'].entries()) {
    const res = await post('/v1/charges', { amount: 99_999_999, currency, source: 'tok_visa', description: 'fuzz seed' }, `setup-charge-${options.seed}-${i}`);
    if (res.status !== 201) throw new Error(`setup: a charge answered ${res.status}: ${JSON.stringify(res.body)}`);
    chargeIds.push(String(res.body.id));
  }
  const declined = await post('/v1/charges', { amount: 500, currency: 'usd', source: 'tok_chargeDeclined' }, `setup-declined-${options.seed}`);
  if (declined.status !== 402) throw new Error(`setup: a declined charge answered ${declined.status}`);
  chargeIds.push(String((declined.body.charge as { id: string }).id));
  const refund = await post('/v1/refunds', { charge: chargeIds[0], amount: 1 }, `setup-refund-${options.seed}`);
  if (refund.status !== 201) throw new Error(`setup: a refund answered ${refund.status}: ${JSON.stringify(refund.body)}`);
  return { apiKey: options.apiKey, chargeIds, refundIds: [String(refund.body.id)], host };
}

interface Exercised {
  input: FuzzInput;
  answer: Answer;
  checked: Checked;
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const started = performance.now();
  const log = options.log ?? (() => undefined);
  const httpLayer = options.httpLayer ?? 'bare-ok';
  const clientTimeoutMs = options.clientTimeoutMs ?? Math.max(10_000, 2 * options.deadlineMs);
  const known = await setup(options, new URL(options.baseUrl).host);
  const counts: FuzzReport['counts'] = {};
  const findings: Finding[] = [];
  let violationCount = 0;
  let slowest: FuzzReport['slowest'];
  let requests = 0;
  let shrinkRequests = 0;
  let rows = await options.rowCounts();

  /** Sends one input and checks its answer, and the rows it wrote, against every property. */
  async function exercise(endpoint: Endpoint, input: FuzzInput): Promise<Exercised> {
    options.serverLog?.(); // from here on, the lines are this request's
    const answer = await send(options.baseUrl, input, clientTimeoutMs);
    const checked = checkAnswer(input, answer, { deadlineMs: options.deadlineMs, httpLayer });
    const after = await options.rowCounts();
    const expected = expectedDeltas(input, answer, checked.body);
    const delta = (k: string) => (after[k] ?? 0) - (rows[k] ?? 0);
    const changed = Object.keys({ ...rows, ...after }).filter((k) => delta(k) !== (expected.deltas[k] ?? 0));
    if (changed.length) {
      const detail = changed.map((k) => `${k} ${rows[k] ?? 0} → ${after[k] ?? 0} (expected ${(expected.deltas[k] ?? 0) >= 0 ? '+' : ''}${expected.deltas[k] ?? 0})`);
      checked.problems.push({ kind: 'rows changed', text: `rows changed unexpectedly (${expected.why}): ${detail.join(', ')}` });
    }
    rows = after;
    if (!slowest || answer.ms > slowest.ms) slowest = { endpoint, ms: answer.ms, status: checked.label, input: describeInput(input) };
    return { input, answer, checked };
  }

  const violationOf = (endpoint: Endpoint, e: Exercised, serverLog = options.serverLog?.() ?? []): Violation => ({
    endpoint,
    signature: signatureOf(e.checked),
    problems: e.checked.problems.map((p) => p.text),
    input: describeInput(e.input),
    answer: describeAnswer(e.answer),
    serverLog,
  });
  const replayOf = (endpoint: Endpoint, path: string) => `npm run fuzz -- --seed ${options.seed} --endpoint '${endpoint}' --path '${path}'${options.replayFlags ? ` ${options.replayFlags}` : ''}`;

  for (const endpoint of options.endpoints ?? ENDPOINTS) {
    const endpointStarted = performance.now();
    const tally = (counts[endpoint] ??= {});
    const arb = inputArb(endpoint, known, options.httpLayerOnly ?? false);
    const seed = endpointSeed(options.seed, endpoint);
    const found = new Map<string, Finding>();
    let run = 0;

    // The run: every input, none stopping it; each kind of violation remembered with the run that showed it first.
    await fc.assert(
      fc.asyncProperty(arb, async (input) => {
        const index = run;
        run += 1;
        requests += 1;
        const e = await exercise(endpoint, input);
        tally[e.checked.label] = (tally[e.checked.label] ?? 0) + 1;
        if (options.progressEvery && run % options.progressEvery === 0) log(`  ${endpoint}: ${run} requests`);
        if (e.checked.problems.length === 0) return;
        violationCount += 1;
        const signature = signatureOf(e.checked);
        const finding = found.get(signature);
        const serverLog = options.serverLog?.() ?? [];
        const tagsOf = (f: Finding) => {
          for (const tag of new Set(input.tags.map(tagKind))) f.tagCounts[tag] = (f.tagCounts[tag] ?? 0) + 1;
          for (const error of serverErrors(serverLog)) f.serverErrors[error] = (f.serverErrors[error] ?? 0) + 1;
        };
        if (finding) {
          finding.occurrences += 1;
          tagsOf(finding);
          return;
        }
        const path = options.path ?? String(index);
        const violation = violationOf(endpoint, e, serverLog);
        const fresh: Finding = { endpoint, signature, occurrences: 1, tagCounts: {}, serverErrors: {}, first: { ...violation, run: index, replay: replayOf(endpoint, path) } };
        tagsOf(fresh);
        found.set(signature, fresh);
      }),
      { numRuns: options.runsPerEndpoint, seed, ...(options.path ? { path: options.path } : {}) },
    );

    // Then each kind of violation shrunk on its own, from the run that showed it first.
    for (const finding of found.values()) {
      if (options.shrink === false) continue;
      let last: Violation | undefined;
      const details = await fc.check(
        fc.asyncProperty(arb, async (input) => {
          shrinkRequests += 1;
          const e = await exercise(endpoint, input);
          if (e.checked.problems.length === 0 || signatureOf(e.checked) !== finding.signature) return true;
          last = violationOf(endpoint, e);
          return false;
        }),
        { seed, path: options.path ?? String(finding.first.run) },
      );
      if (details.failed && last && details.counterexamplePath) {
        finding.shrunk = { ...last, path: details.counterexamplePath, numShrinks: details.numShrinks, replay: replayOf(endpoint, details.counterexamplePath) };
      } else {
        finding.note = 'the replay of its run did not fail the same way again (the first answer depended on state)';
      }
    }
    findings.push(...found.values());
    const seconds = ((performance.now() - endpointStarted) / 1000).toFixed(1);
    const kinds = [...found.values()].map((f) => `${f.signature} ×${f.occurrences}`);
    log(`${endpoint}: ${run} requests in ${seconds} s${kinds.length ? `; VIOLATIONS: ${kinds.join(', ')}` : ''}`);
  }
  return { seed: options.seed, counts, requests, shrinkRequests, violationCount, findings, slowest, elapsedMs: performance.now() - started, rows };
}

/** Each endpoint draws from its own stream (else all would draw the same keys), derived from the run's seed. */
export function endpointSeed(seed: number, endpoint: Endpoint): number {
  let h = 0x811c9dc5;
  for (const c of endpoint) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193);
  return ((seed ^ h) >>> 0) & 0x7fffffff;
}

/** The errors in pino lines: "RangeError: Maximum call stack size exceeded at protoKeys (src/validation.ts:29)". */
function serverErrors(lines: string[]): string[] {
  return lines.flatMap((line) => {
    try {
      const err = (JSON.parse(line) as { err?: { type?: string; message?: string; stack?: string } }).err;
      if (!err) return [];
      const frame = /\n\s+at (?:.*?\()?([^\n()]*\/src\/[^\n():]+:\d+)/.exec(err.stack ?? '')?.[1]?.replace(/^.*\/src\//, 'src/');
      return [`${err.type ?? 'Error'}: ${err.message ?? ''}${frame ? ` at ${frame}` : ''}`];
    } catch {
      return [];
    }
  });
}

/** A tag without its particulars (sizes, values), to count what violating requests share. */
const tagKind = (tag: string) => tag.replace(/\d+/g, 'N').split(':')[0]!.slice(0, 40);

const signatureOf = (checked: Checked) => [...new Set(checked.problems.map((p) => p.kind))].sort().join(' + ');

/** The counts as a table: one row per endpoint, one column per answer. */
export function formatCounts(counts: FuzzReport['counts']): string {
  const columns = [...new Set(Object.values(counts).flatMap((c) => Object.keys(c)))].sort();
  const endpointWidth = Math.max(8, ...Object.keys(counts).map((e) => e.length));
  const widths = columns.map((c) => Math.max(c.length, ...Object.values(counts).map((r) => String(r[c] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(endpointWidth) : c.padStart(widths[i - 1]!))).join('  ');
  const rows = Object.entries(counts).map(([e, r]) => line([e, ...columns.map((c) => String(r[c] ?? ''))]));
  const total = line(['total', ...columns.map((c) => String(Object.values(counts).reduce((s, r) => s + (r[c] ?? 0), 0)))]);
  return [line(['endpoint', ...columns]), ...rows, total].join('\n');
}

/** Everything a failed run must show: each finding's first input and its shrunk counterexample, answers and server log. */
export function formatFindings(report: FuzzReport): string {
  const out: string[] = [];
  const show = (v: Violation) => {
    out.push(`  problems: ${v.problems.join('; ')}`, ...v.input.split('\n').map((l) => `  ${l}`), `  answer: ${v.answer.split('\n').join('\n  ')}`);
    if (v.serverLog.length) out.push('  server log:', ...v.serverLog.slice(-4).map((l) => `    ${l.slice(0, 1500)}`));
  };
  // One finding per kind in full (its first endpoint); the same kind elsewhere is listed under it.
  const bySignature = new Map<string, Finding[]>();
  for (const f of report.findings) bySignature.set(f.signature, [...(bySignature.get(f.signature) ?? []), f]);
  for (const [signature, group] of bySignature) {
    const f = group[0]!;
    const total = group.reduce((n, g) => n + g.occurrences, 0);
    out.push(`FINDING ${signature}: ${total} request(s) on ${group.length} endpoint(s): ${group.map((g) => `${g.endpoint} ×${g.occurrences}`).join(', ')}`);
    const tags = new Map<string, number>();
    for (const g of group) for (const [t, n] of Object.entries(g.tagCounts)) tags.set(t, (tags.get(t) ?? 0) + n);
    const common = [...tags].sort((a, b) => b[1] - a[1]).slice(0, 8);
    out.push(` tags of those requests: ${common.map(([t, n]) => `${t} ${Math.round((100 * n) / total)}%`).join(', ')}`);
    const errors = new Map<string, number>();
    for (const g of group) for (const [t, n] of Object.entries(g.serverErrors)) errors.set(t, (errors.get(t) ?? 0) + n);
    if (errors.size) out.push(` server errors logged for them: ${[...errors].map(([t, n]) => `${t} ×${n}`).join('; ')}`);
    out.push(` shown for ${f.endpoint}:`);
    out.push(` first, at run ${f.first.run}; replay: ${f.first.replay}`);
    show(f.first);
    if (f.shrunk) {
      out.push(` shrunk by fast-check (${f.shrunk.numShrinks} shrinks; seed ${report.seed}, path ${f.shrunk.path}); replay: ${f.shrunk.replay}`);
      show(f.shrunk);
    } else if (f.note) out.push(` not shrunk: ${f.note}`);
    out.push('');
  }
  return out.join('\n');
}
