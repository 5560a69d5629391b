/**
 * Resources several segment maps point at and share across the Bundle: Practitioner (XCN), Organization
 * (XON / HD) and Location (HD, PL), each created once per identifier (or name) and reused.
 */
import type { Identifier, Location, Organization, Practitioner } from '@medplum/fhirtypes';
import type { Hl7Rep } from '../../hl7v2/parser';
import { V2_TABLE } from '../codes';
import { ref } from '../context';
import type { ConvertContext } from '../convert';
import { c, codeOf, codeStr, compact, hdDisplay, hdSystem, nest, valued } from '../datatypes';
import { idKey, type Ref } from './common';

/** XCN[Practitioner]: one Practitioner per identifier (or name), shared across the Bundle. */
export function practitioner(r: Hl7Rep | undefined, ctx: ConvertContext): Ref | undefined {
  if (!r) return undefined;
  const idv = c(r, 1);
  const nameParts = [c(r, 2), c(r, 3), c(r, 4)].filter(valued);
  if (!valued(idv) && !nameParts.length) return undefined;
  const hd = nest(r, 9);
  const sys = valued(idv) ? hdSystem(hd, ctx) : undefined;
  const key = valued(idv) ? `id|${sys ?? `scope:${ctx.scope}`}|${idv}` : `name|${nameParts.join('^')}`;
  const pid = ctx.b.idFor('Practitioner', key);
  const existing = ctx.b.get(pid) as Practitioner | undefined;
  const fam = r[1] ?? [];
  if (existing) return ref(existing, [c(r, 3), fam[0]].filter(valued).join(' ') || undefined);
  const p: Practitioner = { resourceType: 'Practitioner', id: pid };
  if (valued(idv)) {
    const id: Identifier = {};
    if (sys) id.system = sys;
    id.value = idv;
    const t = c(r, 13);
    if (valued(t)) id.type = { coding: [{ system: V2_TABLE('0203'), code: codeStr(t) }] };
    const asg = hdDisplay(hd);
    if (asg) id.assigner = { display: asg };
    p.identifier = [id];
  }
  const name = compact({
    family: valued(fam[0]) ? fam[0] : undefined,
    given: [c(r, 3), c(r, 4)].filter(valued),
    suffix: [c(r, 5), c(r, 21)].filter(valued),
    prefix: [c(r, 6)].filter(valued),
    use: codeOf('NameType', c(r, 10)) as 'official' | undefined,
  });
  if (name) p.name = [name];
  const q = c(r, 7);
  if (valued(q)) p.qualification = [{ code: { coding: [{ system: V2_TABLE('0360'), code: codeStr(q) }] } }];
  const added = ctx.b.add(p);
  return ref(added, name ? [c(r, 3), fam[0]].filter(valued).join(' ') || undefined : undefined);
}

/** XON / HD / name -> Organization (org-1: a name or an identifier). */
export function organization(
  name: string | undefined,
  identifier: Identifier | undefined,
  ctx: ConvertContext,
): Ref | undefined {
  if (!valued(name) && !identifier?.value) return undefined;
  const o: Organization = { resourceType: 'Organization' };
  if (identifier?.value) o.identifier = [identifier];
  if (valued(name)) o.name = name;
  o.id = ctx.b.idFor('Organization', identifier?.value ? `id|${idKey(identifier, ctx)}` : `name|${name}`);
  return ref(ctx.b.add(o), valued(name) ? name : undefined);
}

export function xonOrg(r: Hl7Rep | undefined, ctx: ConvertContext): Ref | undefined {
  if (!r) return undefined;
  const idv = c(r, 10) || c(r, 3);
  let identifier: Identifier | undefined;
  if (valued(idv)) {
    identifier = { value: idv };
    const sys = hdSystem(nest(r, 6), ctx);
    if (sys) identifier.system = sys;
  }
  return organization(c(r, 1), identifier, ctx);
}

export function hdOrg(hd: Hl7Rep, ctx: ConvertContext): Ref | undefined {
  const ns = c(hd, 1);
  const uid = c(hd, 2);
  let identifier: Identifier | undefined;
  if (valued(uid)) {
    // HD.2 universal id: an OID / UUID / URI is a URI identifier (system urn:ietf:rfc:3986, value the URI)
    const t = c(hd, 3).toUpperCase();
    if (/^[0-2](\.(0|[1-9]\d*))+$/.test(uid)) identifier = { system: 'urn:ietf:rfc:3986', value: `urn:oid:${uid}` };
    else if (t === 'UUID' || /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(uid))
      identifier = { system: 'urn:ietf:rfc:3986', value: `urn:uuid:${uid.toLowerCase()}` };
    else if (/^[a-z][a-z0-9+.-]*:\S+$/i.test(uid)) identifier = { system: 'urn:ietf:rfc:3986', value: uid };
    else identifier = { value: uid };
  }
  return organization(ns || uid, identifier, ctx);
}

const LOC_TYPE = 'http://terminology.hl7.org/CodeSystem/location-physical-type';
/** HD[Location] rows 3-6: HD.1 -> name, HD.2 -> identifier.value (when HD.3 is ISO/UUID), physicalType "si" (site). */
export function hdLocation(hd: Hl7Rep | undefined, ctx: ConvertContext): Ref | undefined {
  const ns = c(hd, 1);
  const uid = c(hd, 2);
  if (!valued(ns) && !valued(uid)) return undefined;
  const l: Location = { resourceType: 'Location', id: ctx.b.idFor('Location', `hd|${ns}|${uid}`), mode: 'instance' };
  if (valued(ns)) l.name = ns;
  if (valued(uid)) {
    const t = c(hd, 3).toUpperCase();
    const oid = /^[0-2](\.(0|[1-9]\d*))+$/.test(uid);
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(uid);
    l.identifier = [
      (t === 'ISO' && oid) || (t === 'UUID' && uuid)
        ? { system: 'urn:ietf:rfc:3986', value: oid ? `urn:oid:${uid}` : `urn:uuid:${uid.toLowerCase()}` }
        : { value: uid },
    ];
    l.physicalType = { coding: [{ system: LOC_TYPE, code: 'si', display: 'Site' }] };
  }
  const added = ctx.b.add(l);
  return ref(added, added.name);
}
/** PL[Location]: facility (PL.4) > building (PL.7) > floor (PL.8) > point of care (PL.1) > room (PL.2) > bed (PL.3), linked by partOf; returns the most specific. */
export function location(r: Hl7Rep | undefined, ctx: ConvertContext): Ref | undefined {
  if (!r || r.length === 0) return undefined;
  const memoKey = r.map((x) => x.join('&')).join('^');
  const memo = ctx.state.locations.get(memoKey);
  if (memo !== undefined) return memo ?? undefined;
  const out = locationUncached(r, ctx);
  ctx.state.locations.set(memoKey, out ?? null);
  return out;
}

function locationUncached(r: Hl7Rep, ctx: ConvertContext): Ref | undefined {
  const levels: [number, string | undefined][] = [
    [4, 'si'],
    [7, 'bu'],
    [8, 'lvl'],
    [1, undefined],
    [2, 'ro'],
    [3, 'bd'],
  ];
  let parent: Location | undefined;
  let path = '';
  for (const [i, type] of levels) {
    const v = i === 4 ? c(nest(r, 4), 1) || c(nest(r, 4), 2) : c(r, i);
    if (!valued(v)) continue;
    path += `^${i}=${v}`;
    const l: Location = { resourceType: 'Location', id: ctx.b.idFor('Location', path), name: v, mode: 'instance' };
    l.identifier = [{ value: v }];
    if (type) l.physicalType = { coding: [{ system: LOC_TYPE, code: type }] };
    if (i === 1 || (!parent && valued(c(r, 9)))) {
      /* description at the most specific level is set below */
    }
    if (parent) l.partOf = ref(parent);
    parent = ctx.b.add(l);
  }
  if (!parent) return undefined;
  if (valued(c(r, 9)) && !parent.description) parent.description = c(r, 9);
  return ref(parent, parent.name);
}
