/** A FHIR token search parameter `identifier=system|value`, escaped (\\ | , $) and URL-encoded. */
export function identifierParam(system: string, value: string, name = 'identifier'): string {
  const esc = (s: string) => s.replace(/[\\|,$]/g, (c) => `\\${c}`);
  return `${name}=${encodeURIComponent(`${esc(system)}|${esc(value)}`)}`;
}
