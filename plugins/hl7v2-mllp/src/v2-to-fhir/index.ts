export * from './conversion.schema';
export * from './dates';
export * from './context';
export * from './convert';
export * from './validate';
export { mapCode } from './codes';
export { ORDER_MESSAGES } from './segments/order';
export { checkSegment, primitiveProblem, codeProblem, unknownSegment, type IssueReporter } from './quality';
