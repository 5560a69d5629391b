import { definePlugin } from '@ferry/core';

export const cernerPlugin = definePlugin({
  manifest: { id: 'cerner', version: '0.1.0', engine: '^0.1.0' },
  configSchema: {},
  register() {
    // filled in by the cerner issue
  },
});
export default cernerPlugin;
