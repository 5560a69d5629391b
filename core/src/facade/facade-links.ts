/**
 * A patient's identity across connections: the identities linked by a shared link key (the MRN, or
 * the first of a connection's `facade.identity.linkSystems`) and by explicit links (`$link`, store
 * migration 13), followed transitively -- A~B and B~C give A~C, whichever relation each step is.
 */
import type { FacadeLinkEnd, FacadeStore } from '../store/message-store';

/** At most this many identities in one patient's group (a runaway chain of links stops there). */
export const MAX_LINKED_IDENTITIES = 200;

/** One patient at one connection (its canonical id there). */
export interface LinkedIdentity {
  connection: string;
  id: string;
}

/**
 * The identities linked to `start` (itself included), by link key and explicit link, transitively;
 * in (connection, id) order. Reads only the store.
 */
export async function linkedIdentities(
  f: FacadeStore,
  start: LinkedIdentity,
  startLinkKey: string | undefined,
): Promise<LinkedIdentity[]> {
  const key = (connection: string, id: string) => `${connection}\u0000${id}`;
  const found = new Map<string, LinkedIdentity>([[key(start.connection, start.id), start]]);
  const keysSeen = new Set<string>();
  const queue: LinkedIdentity[] = [start];
  while (queue.length && found.size < MAX_LINKED_IDENTITIES) {
    const n = queue.shift()!;
    const linkKey = n === start ? startLinkKey : (await f.facadeIdentityOf(n.connection, 'Patient', n.id))?.mrn;
    const next: FacadeLinkEnd[] = [];
    if (linkKey && !keysSeen.has(linkKey)) {
      keysSeen.add(linkKey);
      next.push(...(await f.facadeIdentitiesByMrn('Patient', linkKey)));
    }
    next.push(...(await f.facadeLinksOf('Patient', { connectionId: n.connection, canonicalId: n.id })));
    for (const x of next) {
      const k = key(x.connectionId, x.canonicalId);
      if (found.has(k) || found.size >= MAX_LINKED_IDENTITIES) continue;
      const i = { connection: x.connectionId, id: x.canonicalId };
      found.set(k, i);
      queue.push(i);
    }
  }
  return [...found.values()].sort((a, b) =>
    a.connection === b.connection ? (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) : a.connection < b.connection ? -1 : 1,
  );
}
