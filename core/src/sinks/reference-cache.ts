/**
 * Where conditional references resolved to (`Patient?identifier=sys|val` -> `Patient/123`): learnt
 * from searches and from the sink's own writes. Bounded (least recently used dropped) and entries
 * expire, so a resource merged or deleted on the server is searched again after `ttlMs`; entries
 * used by a transaction that failed are dropped at once.
 */
export class ReferenceCache {
  private readonly map = new Map<string, { to: string; at: number }>();
  constructor(
    readonly max = 5000,
    readonly ttlMs = 10 * 60_000,
  ) {}
  get(key: string): string | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    if (Date.now() - hit.at > this.ttlMs) return undefined;
    this.map.set(key, hit);
    return hit.to;
  }
  set(key: string, to: string): void {
    this.map.delete(key);
    this.map.set(key, { to, at: Date.now() });
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }
  delete(key: string): void {
    this.map.delete(key);
  }
  get size(): number {
    return this.map.size;
  }
}
