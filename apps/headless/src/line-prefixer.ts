/**
 * Output of several tasks on one terminal, as `docker compose logs` shows several containers': every line
 * starts with its task's label. Task output arrives in chunks cut anywhere (mid-line, mid-character), so a
 * prefixer per task and stream keeps the unfinished last line until its newline, or until `end()`.
 */
export class LinePrefixer {
  readonly #prefix: string;
  readonly #decoder = new TextDecoder('utf-8');
  #partial = '';

  /**
   * A line still unfinished past this many characters is written out anyway, prefixed, and continued on the
   * next line: a task that prints without newlines must not be held in memory without bound.
   */
  static readonly MAX_PARTIAL_CHARS = 64 * 1024;

  constructor(prefix: string) {
    this.#prefix = prefix;
  }

  /** The complete lines this chunk finishes, each prefixed and ending in a newline; '' when none. */
  push(chunk: Uint8Array | string): string {
    const text =
      this.#partial + (typeof chunk === 'string' ? chunk : this.#decoder.decode(chunk, { stream: true }));
    const cut = text.lastIndexOf('\n');
    let out = '';
    let rest = text;
    if (cut >= 0) {
      out = this.#prefixLines(text.slice(0, cut));
      rest = text.slice(cut + 1);
    }
    while (rest.length > LinePrefixer.MAX_PARTIAL_CHARS) {
      out += `${this.#prefix}${rest.slice(0, LinePrefixer.MAX_PARTIAL_CHARS)}\n`;
      rest = rest.slice(LinePrefixer.MAX_PARTIAL_CHARS);
    }
    this.#partial = rest;
    return out;
  }

  /** What is left at the end of the output: the unfinished last line, prefixed and given its newline. */
  end(): string {
    const rest = this.#partial + this.#decoder.decode();
    this.#partial = '';
    return rest.length > 0 ? this.#prefixLines(rest) : '';
  }

  #prefixLines(text: string): string {
    let out = '';
    for (const line of text.split('\n')) out += `${this.#prefix}${line}\n`;
    return out;
  }
}
