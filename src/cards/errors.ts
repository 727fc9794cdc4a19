/** A card's configuration cannot be used (a bad limit, a key of the wrong kind); names the problem. */
export class CardConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CardConfigError";
  }
}
