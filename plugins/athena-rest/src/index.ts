import { definePlugin } from '@ferry/core';

export const athenaRestPlugin = definePlugin({
  manifest: { id: 'athena-rest', version: '0.1.0', engine: '^0.1.0' },
  configSchema: {},
  register() {
    // filled in by the athena-rest issue
  },
});
export default athenaRestPlugin;
