// Where a webhook may be sent. A URL given by a client must not make us a proxy into our own network
// (SSRF): every address that is not public (see isPublicAddress) is refused, when the endpoint is
// made (its host resolved) and again at every delivery, on the very address the connection goes to, so a
// name that resolves elsewhere later cannot point us inward. WEBHOOK_ALLOW_PRIVATE_URLS lifts it.
import { type LookupAddress, type LookupOptions, lookup } from 'node:dns';
import { isIP } from 'node:net';
import os from 'node:os';
import ipaddr from 'ipaddr.js';

/**
 * Whether an address is on the public internet: ipaddr.js's classification (`range()`), which covers IANA's
 * special-purpose registries for IPv4 and IPv6 (loopback, private, shared, link-local, documentation,
 * benchmarking, reserved, multicast, the translation and tunnel prefixes that embed an IPv4 address), must
 * say `unicast`, and the address must not be one of this host's own interfaces (a host may well have a
 * public address on one). An IPv4-mapped IPv6 address is refused, whatever it maps to.
 */
export function isPublicAddress(address: string): boolean {
  if (isIP(address) === 0) return false;
  const parsed = ipaddr.parse(address);
  if (parsed.range() !== 'unicast' || isOwnAddress(parsed)) return false;
  // The deprecated IPv4-compatible form (::a.b.c.d, RFC 4291), which ipaddr.js counts as unicast: some
  // stacks still route it to the IPv4 address it embeds.
  return !(parsed instanceof ipaddr.IPv6 && parsed.match(IPV4_COMPATIBLE));
}

const IPV4_COMPATIBLE = ipaddr.parseCIDR('::/96') as [ipaddr.IPv6, number];

/** One of this host's interface addresses, read afresh (interfaces come and go). */
function isOwnAddress(address: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  const normalized = address.toNormalizedString();
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const own of addresses ?? []) {
      const bare = own.address.split('%')[0]!;
      if (isIP(bare) === 0) continue;
      const parsed = ipaddr.parse(bare);
      if (parsed.kind() === address.kind() && parsed.toNormalizedString() === normalized) return true;
    }
  }
  return false;
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
  new AddressRefusedError(
    `${host === address ? `${address} is not a public address` : `${host} resolves to an address that is not public`} ` +
      '(WEBHOOK_ALLOW_PRIVATE_URLS=true allows such addresses, for development)',
  );

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
