// Text from a sliver, made safe to show on the user's terminal: a console log may hold any control
// sequence, and one that clears the screen, retitles the window or sets the clipboard must not act
// on the terminal of whoever reads the log (a site's pi or an admin, not only the slice).

// CSI sequences, OSC/DCS/SOS/PM/APC strings (7- and 8-bit), other ESC sequences, lone C0 controls
// (but tab and newline), DEL and C1 controls.
const CONTROL = /(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b[\]P^_X]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?|\x1b[ -/]*[0-~]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;
// Colours and bold (SGR) are kept: boot logs use them for [  OK  ] and [FAILED].
const SGR = /^\x1b\[[0-9;]*m$/;

export function forTerminal(text: string): string {
  let coloured = false;
  const out = text.replace(/\r+\n/g, '\n').replace(CONTROL, (seq) => {
    if (!SGR.test(seq)) return '';
    coloured = true;
    return seq;
  });
  // A colour left on at the end would stay on in the user's shell.
  return coloured ? `${out}\x1b[0m` : out;
}
