import { describe, expect, it } from 'vitest';
import { forTerminal } from './terminal.js';

describe('forTerminal', () => {
  it('keeps text, tabs, newlines and colours', () => {
    expect(forTerminal('plain\ttext\nline two\n')).toBe('plain\ttext\nline two\n');
    expect(forTerminal('[\x1b[0;32m  OK  \x1b[0m] Started ssh.service\n')).toBe('[\x1b[0;32m  OK  \x1b[0m] Started ssh.service\n\x1b[0m');
    expect(forTerminal('päivää ✓\n')).toBe('päivää ✓\n');
  });

  it('turns serial CRLF into newlines and drops lone carriage returns', () => {
    expect(forTerminal('one\r\ntwo\r\r\nthree\rfour')).toBe('one\ntwo\nthreefour');
  });

  it('drops sequences that would act on the terminal', () => {
    const hostile = [
      '\x1b[H\x1b[2J', // clear screen (agetty before its prompt)
      '\x1b]0;owned\x07', // window title
      '\x1b]52;c;aGk=\x1b\\', // clipboard
      '\x1bc', // full reset
      '\x1b[?25l', // hide the cursor
      '\x1bP+q544e\x1b\\', // DCS query
      '\x9b31m', // 8-bit CSI
      '\x07\x08\x00\x7f',
    ].join('');
    expect(forTerminal(`login: ${hostile}root\n`)).toBe('login: root\n');
    expect(forTerminal('cut off at the end \x1b')).toBe('cut off at the end ');
    expect(forTerminal('cut off at the end \x1b[1')).toBe('cut off at the end 1');
  });
});
