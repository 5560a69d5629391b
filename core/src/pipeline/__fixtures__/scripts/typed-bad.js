// @ts-check
/** @type {import('@ferry/core/script').ScriptStep} */
module.exports = (bundle, message, ferry) => {
  const patient = ferry.resource('Patient');
  patient.gendr = 'female';
  ferry.v2.get(3);
  ferry.resources('Pateint');
  return 'not a bundle';
};
