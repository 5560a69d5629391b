import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { silentLogger } from '@ferry/core';
import { AthenaSimulator, PRACTICE, seedPractice } from '../../../../test/simulators/athena';
import { tempDir } from '@ferry/testkit';
import { athenaSubscriptionsCommand } from './subscriptions.command';

let sim: AthenaSimulator;
beforeAll(async () => {
  sim = await AthenaSimulator.start();
  seedPractice(sim);
});
afterAll(() => sim.stop());

it('ferry athena-subscriptions lists feed subscriptions and subscribes on request', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'ferry.yaml');
  writeFileSync(
    file,
    `plugins: ['@ferry/plugin-athena-rest']
sources:
  athena: { type: athena-rest, baseUrl: '${sim.url}', clientId: ferry-client, clientSecret: ferry-secret, practiceId: ${PRACTICE}, feeds: [patients, appointments] }
`,
  );
  sim.subscribe(PRACTICE, 'patients');
  const lines: string[] = [];
  const cmd = athenaSubscriptionsCommand((l) => lines.push(l));
  const ctx = { configFile: file, logger: silentLogger(), transforms: [] };
  expect(await cmd.run([], { subscribe: false }, ctx)).toBe(1);
  expect(lines.slice(1).map((l) => l.split('\t').slice(0, 3))).toEqual([
    ['athena', 'patients', 'ACTIVE'],
    ['athena', 'appointments', 'INACTIVE'],
  ]);
  lines.length = 0;
  expect(await cmd.run([], { subscribe: true }, ctx)).toBe(0);
  expect(lines[2]).toMatch(/^athena\tappointments\tACTIVE\tScheduleAppointment,/);
  expect(sim.apiRequests('/appointments/changed/subscription').filter((r) => r.method === 'POST')).toHaveLength(1);
});
