import {
  actionFor,
  applyDataQualityPolicy,
  checkDataQualityFields,
  dataQualityOutcome,
  failsMessage,
} from './data-quality';

describe('dataQuality policy', () => {
  const policy = {
    policy: 'warn' as const,
    fields: { 'PID-7': 'fail' as const, 'PID-11-5': 'fail' as const, OBX: 'fail' as const, 'OBX-5': 'warn' as const },
  };
  test('the most specific entry wins: SEG-n-c, SEG-n, SEG, then the policy', () => {
    expect(actionFor(policy, 'PID-7')).toBe('fail');
    expect(actionFor(policy, 'PID-7-1')).toBe('fail');
    expect(actionFor(policy, 'PID-11-5')).toBe('fail');
    expect(actionFor(policy, 'PID-11-4')).toBe('warn');
    expect(actionFor(policy, 'OBX-5-2')).toBe('warn');
    expect(actionFor(policy, 'OBX-14')).toBe('fail');
    expect(actionFor(policy, 'EVN-2')).toBe('warn');
    expect(actionFor({ policy: 'fail', fields: { 'patient.dob': 'warn' } }, 'patient.dob')).toBe('warn');
  });
  test('severity from the policy; fail-level issues fail the message; the outcome names locations and paths', () => {
    const issues = applyDataQualityPolicy(
      [
        { location: 'PID-7', path: 'Patient.birthDate', code: 'invalid-date', text: 'not a date' },
        { location: 'EVN-2', code: 'invalid-date', text: 'not a date', severity: 'error' },
      ],
      policy,
    );
    expect(issues.map((i) => i.severity)).toEqual(['error', 'warning']);
    expect(failsMessage(issues)).toBe(true);
    expect(failsMessage(issues.slice(1))).toBe(false);
    expect(dataQualityOutcome(issues).issue[0]).toEqual({
      severity: 'error',
      code: 'value',
      details: { text: 'PID-7: not a date' },
      location: ['PID-7'],
      expression: ['Patient.birthDate'],
    });
  });
  test('fields are checked strictly', () => {
    expect(() =>
      checkDataQualityFields({ 'PID-7': 'fail', 'PID-11-5': 'warn', ZPD: 'warn', 'patient.dob': 'fail' }),
    ).not.toThrow();
    expect(() => checkDataQualityFields({ 'PID-7': 'error' })).toThrow(/must be warn or fail/);
    expect(() => checkDataQualityFields({ 'pid 7': 'fail' })).toThrow(/not a location/);
    expect(() => checkDataQualityFields({ 'PID-0': 'fail' })).toThrow(/not a location/);
    expect(() => checkDataQualityFields(['PID-7'])).toThrow(/mapping/);
  });
});
