// Shared by the bench scripts: command-line options and the synthetic athena records of the athena
// and facade benchmarks (the same patient shape, so their figures compare).
'use strict';

/** `--name value` from the command line, else `dflt`. */
function argOf(name, dflt) {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
}

/** An athenaOne REST patient record (GET /{practiceid}/patients/{id}), patientid `first + i`. */
function athenaPatient(i, first = 10000) {
  return {
    patientid: String(first + i),
    firstname: `Given${i}`,
    lastname: `Family${i}`,
    dob: '01/15/1985',
    sex: i % 2 ? 'M' : 'F',
    status: 'active',
    departmentid: '1',
    email: `p${i}@example.org`,
    homephone: '8605555555',
    mobilephone: '8608105503',
    address1: `${i} Main St`,
    city: 'BOSTON',
    state: 'MA',
    zip: '02210',
    countrycode3166: 'US',
    maritalstatus: 'S',
  };
}

module.exports = { argOf, athenaPatient };
