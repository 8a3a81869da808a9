/** Validators of the verification settings (config/fields.ts and the API share them). */
import { Cron } from 'croner';
import { ReboundError } from '../errors.js';

const invalid = (why: string): ReboundError => new ReboundError('ERR_INVALID_ARGUMENT', why);

export function checkCron(text: string): void {
  if (text === 'off') return;
  try {
    new Cron(text, { paused: true }).stop();
  } catch (err) {
    throw invalid(`'${text}' is not a cron expression: ${(err as Error).message}`);
  }
}

export function checkRegex(text: string): void {
  if (text === 'off') return;
  try {
    new RegExp(text);
  } catch (err) {
    throw invalid(`'${text}' is not a regular expression: ${(err as Error).message}`);
  }
}

export function checkPort(text: string): void {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535) throw invalid(`'${text}' is not a TCP port (1-65535)`);
}
