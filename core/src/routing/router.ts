import type { Bundle } from '@medplum/fhirtypes';
import type { RouteConfig } from '../config/engine.schema';
import { fhirpathTest } from '../fhir/fhirpath';
import type { StoredMessage } from '../model/message';

/** `ADT^A0*` -> /^ADT\^A0.*$/ ; `?` matches one character. */
export function globToRegExp(glob: string): RegExp {
  const re = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i');
}

export interface CompiledRoute {
  config: RouteConfig;
  matchesSource(sourceId: string): boolean;
  matchesType(messageType: string | undefined): boolean;
}

export function compileRoute(config: RouteConfig): CompiledRoute {
  const types = config.when.messageType.map(globToRegExp);
  const from = new Set(config.from);
  return {
    config,
    matchesSource: (s) => from.size === 0 || from.has(s),
    matchesType: (t) => types.length === 0 || (t !== undefined && types.some((r) => r.test(t))),
  };
}

/** The routes whose `from` and `when` match. Several routes may match one message. */
export function matchRoutes(routes: CompiledRoute[], message: StoredMessage, bundle: Bundle): CompiledRoute[] {
  return routes.filter(
    (r) =>
      r.matchesSource(message.sourceId) &&
      r.matchesType(message.headers.messageType) &&
      (!r.config.when.fhirpath || fhirpathTest(r.config.when.fhirpath, bundle)),
  );
}

/** Why a route did or did not take a message (`ferry test-route`): the first clause that failed. */
export interface RouteExplanation {
  route: string;
  matched: boolean;
  /** The clause that did not match: `from`, `when.messageType` or `when.fhirpath`. */
  failed?: 'from' | 'when.messageType' | 'when.fhirpath';
  detail?: string;
}

export function explainRoute(r: CompiledRoute, message: StoredMessage, bundle: Bundle): RouteExplanation {
  const c = r.config;
  if (!r.matchesSource(message.sourceId))
    return {
      route: c.id,
      matched: false,
      failed: 'from',
      detail: `source ${message.sourceId} not in [${c.from.join(', ')}]`,
    };
  if (!r.matchesType(message.headers.messageType))
    return {
      route: c.id,
      matched: false,
      failed: 'when.messageType',
      detail: `message type ${message.headers.messageType ?? '(none)'} not in [${c.when.messageType.join(', ')}]`,
    };
  if (c.when.fhirpath && !fhirpathTest(c.when.fhirpath, bundle))
    return { route: c.id, matched: false, failed: 'when.fhirpath', detail: `${c.when.fhirpath} is false` };
  return { route: c.id, matched: true };
}
