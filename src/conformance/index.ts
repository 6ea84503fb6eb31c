// The driver conformance suite as a library: run it against any Driver (a
// RemoteDriver for a plugin endpoint) or against a daemon's driver.
export { runDriverSuite, caseIds, CAPABILITIES, type SuiteOptions } from './driver-suite';
export { runDaemonSuite } from './daemon-suite';
export { formatReport, failed, summary, type Report, type CaseResult, type Outcome, type Level } from './report';
export { defaultTemplate, loadTemplate, parseTemplate, type SpecTemplate } from './spec-template';
