import { definePlugin } from '@ferry/core';

export const athenaFhirPlugin = definePlugin({
  manifest: { id: 'athena-fhir', version: '0.1.0', engine: '^0.1.0' },
  configSchema: {},
  register() {
    // filled in by the athena-fhir issue
  },
});
export default athenaFhirPlugin;
