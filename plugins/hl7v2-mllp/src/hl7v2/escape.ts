// The HL7 v2 escape codec is core's (route scripts read v2 values with it too): see core/src/util/hl7-escape.ts.
export { escapeHl7, unescapeHl7 } from '@ferry/core';
