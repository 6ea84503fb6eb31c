// Progress on stderr while the bench runs: one updating line on a terminal,
// plain lines (at most every couple of seconds per step) in CI logs.

export class Progress {
  private readonly tty = !!process.stderr.isTTY;
  private readonly t0 = Date.now();
  private section = '';
  private lastLine = '';
  private lastPrinted = 0;

  private stamp(): string {
    const s = Math.round((Date.now() - this.t0) / 1000);
    return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  }

  private write(line: string, final: boolean): void {
    if (this.tty) {
      const cols = process.stderr.columns || 120;
      process.stderr.write(`\r\x1b[K${line.slice(0, cols - 1)}${final ? '\n' : ''}`);
    } else {
      process.stderr.write(`${line}\n`);
    }
    this.lastLine = final ? '' : line;
  }

  /** A new section: printed on its own line. */
  begin(section: string, what: string): void {
    this.section = section;
    this.write(`[${this.stamp()}] == ${section}: ${what}`, true);
  }

  /** A step inside the section (replaces the live line on a terminal). */
  step(text: string): void {
    this.lastPrinted = Date.now();
    this.write(`[${this.stamp()}] ${this.section}: ${text}`, !this.tty);
  }

  /** i of n done; throttled in logs. */
  tick(what: string, i: number, n: number, extra = ''): void {
    const now = Date.now();
    const done = i >= n;
    if (!this.tty && !done && now - this.lastPrinted < 2000) return;
    if (this.tty && !done && now - this.lastPrinted < 100) return;
    this.lastPrinted = now;
    const pct = n > 0 ? Math.floor((100 * i) / n) : 100;
    this.write(`[${this.stamp()}] ${this.section}: ${what} ${i}/${n} (${pct}%)${extra ? ' ' + extra : ''}`, !this.tty);
  }

  /** A result line worth keeping on screen. */
  note(text: string): void {
    this.write(`[${this.stamp()}] ${this.section}: ${text}`, true);
  }

  warn(text: string): void {
    this.write(`[${this.stamp()}] ${this.section}: WARNING: ${text}`, true);
  }

  /** Finish any live line (before other output). */
  flush(): void {
    if (this.tty && this.lastLine) process.stderr.write('\n');
    this.lastLine = '';
  }
}
