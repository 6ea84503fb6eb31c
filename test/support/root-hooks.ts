// Mocha root hooks (loaded by .mocharc.json): what a whole test run shares is
// removed when it ends.
import { rmSync } from 'node:fs';
import { sharedTemplateDir } from './debian';

export const mochaHooks = {
  afterAll(): void {
    rmSync(sharedTemplateDir(), { recursive: true, force: true });
  },
};
