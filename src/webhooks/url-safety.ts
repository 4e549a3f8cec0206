// Where a webhook may be sent. A URL given by a client must not make us a proxy into our own network
// (SSRF): loopback, private, link-local and other non-public addresses are refused, when the endpoint is
// made (its host resolved) and again at every delivery, on the very address the connection goes to, so a
// name that resolves elsewhere later cannot point us inward. WEBHOOK_ALLOW_PRIVATE_URLS lifts it.
import { type LookupAddress, type LookupOptions, lookup } from 'node:dns';
import { BlockList, isIP } from 'node:net';

// One list per family: a BlockList also matches IPv4 addresses against IPv4-mapped IPv6 rules.
const NOT_PUBLIC_V4 = new BlockList();
const NOT_PUBLIC_V6 = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], // "this network"; 0.0.0.0 reaches the local host
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata services
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  NOT_PUBLIC_V4.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 96], // unspecified, loopback, and the old IPv4-compatible form
  ['::ffff:0:0', 96], // IPv4-mapped: whatever it maps to, refused rather than parsed again
  ['::ffff:0:0:0', 96], // IPv4-translated
  ['64:ff9b::', 96], // NAT64: may map to a private IPv4 address
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard-only
  ['2001::', 32], // Teredo: tunnels to an embedded IPv4 address
  ['2001:db8::', 32], // documentation
  ['2002::', 16], // 6to4: embeds an IPv4 address, possibly a private one
  ['fec0::', 10], // site-local (deprecated, still routed by some)
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const) {
  NOT_PUBLIC_V6.addSubnet(network, prefix, 'ipv6');
}

export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return family === 4 ? !NOT_PUBLIC_V4.check(address, 'ipv4') : !NOT_PUBLIC_V6.check(address, 'ipv6');
}

/** The host of a URL as an address when it is one (`[::1]` → `::1`), else undefined. */
function literalAddress(url: URL): string | undefined {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return isIP(host) ? host : undefined;
}

export class AddressRefusedError extends Error {
  readonly code = 'ERR_WEBHOOK_ADDRESS_REFUSED';
}

// A name's internal address is not repeated back: the answer must not map our network for a client.
const refusal = (host: string, address: string) =>
  new AddressRefusedError(host === address ? `${address} is not a public address` : `${host} resolves to an address that is not public`);

/**
 * A `lookup` for http.request that connects only to public addresses: the check is made on the addresses
 * the connection will use, after resolution, so DNS cannot point a public name at an internal address.
 */
export function publicOnlyLookup(
  hostname: string,
  options: LookupOptions,
  callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, []);
    const inward = addresses.find((a) => !isPublicAddress(a.address));
    if (inward) return callback(refusal(hostname, inward.address), []);
    if (options.all) return callback(null, addresses);
    const [first] = addresses;
    return callback(null, first!.address, first!.family);
  });
}

/** Why a URL may not receive webhooks (resolving its host, within `timeoutMs`), or undefined when it may. */
export async function refusedUrl(url: URL, options: { allowPrivate: boolean; timeoutMs: number }): Promise<string | undefined> {
  if (options.allowPrivate) return undefined;
  if (literalAddress(url)) return refusedLiteral(url)?.message;
  // The same check a delivery makes on the addresses it connects to.
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(`${url.hostname} did not resolve within ${options.timeoutMs} ms`), options.timeoutMs);
    publicOnlyLookup(url.hostname, { all: true }, (err) => {
      clearTimeout(timer);
      if (!err) resolve(undefined);
      else resolve(err instanceof AddressRefusedError ? err.message : `${url.hostname} does not resolve (${err.code ?? err.message})`);
    });
  });
}

/** The address check of a delivery to a URL whose host is an address (no lookup happens for those). */
export function refusedLiteral(url: URL): AddressRefusedError | undefined {
  const literal = literalAddress(url);
  return literal && !isPublicAddress(literal) ? refusal(literal, literal) : undefined;
}
