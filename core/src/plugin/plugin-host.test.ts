import { injectable } from 'tsyringe';
import { silentLogger } from '../logging/logger';
import type { MessageSink, PluginDefinition } from './api';
import { definePlugin } from './api';
import { manifestProblems, PluginHost } from './plugin-host';

@injectable()
class NullSink implements MessageSink {
  async deliver(): Promise<void> {}
}

const plugin = (
  id: string,
  extra: Partial<PluginDefinition['manifest']> = {},
  register: PluginDefinition['register'] = () => undefined,
) => definePlugin({ manifest: { id, version: '1.0.0', engine: '^0.1.0', ...extra }, configSchema: {}, register });

const load = (defs: PluginDefinition[]) => new PluginHost(silentLogger()).load(defs, () => ({}));

describe('PluginHost', () => {
  it('checks manifests', () => {
    expect(manifestProblems({ id: 'Bad_Id', version: 'one', engine: 'whatever' })).toEqual([
      expect.stringMatching(/manifest.id must be kebab-case/),
      expect.stringMatching(/manifest.version must be a semver/),
      expect.stringMatching(/manifest.engine must be a semver range/),
    ]);
    expect(manifestProblems({ id: 'ok', version: '1.0.0', engine: '^2.0.0' }, '0.1.0')).toEqual([
      'needs @ferry/core ^2.0.0, this is 0.1.0',
    ]);
    expect(manifestProblems({ id: 'ok', version: '1.0.0', engine: '>=0.1.0' }, '0.1.0')).toEqual([]);
  });

  it('refuses a bad plugin with one error naming it', async () => {
    await expect(load([plugin('good'), plugin('old', { engine: '^9.0.0' })])).rejects.toThrow(
      'plugin "old": needs @ferry/core ^9.0.0',
    );
    await expect(load([plugin('needy', { dependsOn: ['absent'] })])).rejects.toThrow(
      'plugin "needy": depends on "absent", which is not loaded',
    );
    await expect(load([plugin('twice'), plugin('twice')])).rejects.toThrow('plugin "twice": loaded twice');
    await expect(
      load([
        plugin('boom', {}, () => {
          throw new Error('kaput');
        }),
      ]),
    ).rejects.toThrow('plugin "boom": register() failed: kaput');
  });

  it('refuses a source/sink type name already taken, naming both plugins', async () => {
    const a = plugin('a', {}, (reg) => reg.addSinkType('same', NullSink, {}));
    const b = plugin('b', {}, (reg) => reg.addSinkType('same', NullSink, {}));
    await expect(load([a, b])).rejects.toThrow('plugin "b": sink type "same" is already registered by plugin "a"');
  });

  it('registers dependencies first, each plugin in its own child container, collected under shared tokens', async () => {
    const order: string[] = [];
    const host = new PluginHost(silentLogger());
    const dep = plugin('dep', {}, (reg) => {
      order.push('dep');
      reg.addSinkType('dep-sink', NullSink, {});
    });
    const user = plugin('user', { dependsOn: ['dep'] }, (reg) => {
      order.push('user');
      expect(reg.container).not.toBe(host.container);
      reg.addSinkType('user-sink', NullSink, {});
    });
    await host.load([user, dep], () => ({}));
    expect(order).toEqual(['dep', 'user']);
    expect(host.sinkTypes().map((s) => `${s.plugin}:${s.type}`)).toEqual(['dep:dep-sink', 'user:user-sink']);
    expect(host.sinkTypes()[0].container).not.toBe(host.sinkTypes()[1].container);
  });

  it('says clearly when a plugin package cannot be found or is not a plugin', () => {
    expect(() => PluginHost.resolveDefinition('@acme/ferry-plugin-nonexistent', process.cwd())).toThrow(
      'plugin "@acme/ferry-plugin-nonexistent" not found',
    );
    expect(() => PluginHost.resolveDefinition('./no/such/dir', process.cwd())).toThrow(/not found \(no module at/);
    expect(() => PluginHost.resolveDefinition('semver', process.cwd())).toThrow(
      'does not export a definePlugin(...) definition',
    );
  });
});
