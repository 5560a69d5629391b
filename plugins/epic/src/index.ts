import { definePlugin } from '@ferry/core';

export const epicPlugin = definePlugin({
  manifest: { id: 'epic', version: '0.1.0', engine: '^0.1.0' },
  configSchema: {},
  register() {
    // filled in by the epic issue
  },
});
export default epicPlugin;
