// @ts-check
/** A script as its author writes it: typed by @ferry/core/script. */
/** @type {import('@ferry/core/script').ScriptStep} */
module.exports = (bundle, message, ferry) => {
  const patient = ferry.resource('Patient');
  if (!patient) return null;
  const mrn = ferry.v2?.get('PID-3.1');
  if (mrn) patient.identifier = [...(patient.identifier ?? []), { system: 'urn:example:mrn', value: mrn }];
  const encounter = ferry.resource('Encounter');
  const subject = ferry.resolve(encounter?.subject);
  const female = ferry.fhirpathTest("Bundle.entry.resource.ofType(Patient).gender = 'female'");
  bundle.meta = { tag: [{ code: `${message.headers.messageType}:${female}:${subject?.resourceType ?? '-'}` }] };
  for (const obs of ferry.resources('Observation')) obs.status = 'final';
  return bundle;
};
