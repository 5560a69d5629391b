import { randomBytes } from 'node:crypto';

const ENC = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

let lastTime = -1;
const lastRand = new Uint8Array(16);

function fillRandom(): void {
  const b = randomBytes(16);
  for (let i = 0; i < 16; i++) lastRand[i] = b[i] & 31;
}

/** Increments the 80-bit random part (base32 digits); false on overflow. */
function incrementRandom(): boolean {
  for (let i = 15; i >= 0; i--) {
    if (lastRand[i] < 31) {
      lastRand[i]++;
      return true;
    }
    lastRand[i] = 0;
  }
  return false;
}

/**
 * A ULID (26 chars, Crockford base32): 48-bit millisecond time + 80 random bits, monotonic within
 * this process (ids made in the same millisecond increment the random part), so ids sort in the
 * order they were made.
 */
export function newId(now: number = Date.now()): string {
  if (now <= lastTime) {
    if (!incrementRandom()) {
      lastTime++;
      fillRandom();
    }
  } else {
    lastTime = now;
    fillRandom();
  }
  let t = lastTime;
  let time = '';
  for (let i = 0; i < 10; i++) {
    time = ENC[t % 32] + time;
    t = Math.floor(t / 32);
  }
  let rand = '';
  for (let i = 0; i < 16; i++) rand += ENC[lastRand[i]];
  return time + rand;
}

/** The millisecond time encoded in an id made by `newId`. */
export function idTime(id: string): number {
  let t = 0;
  for (let i = 0; i < 10; i++) t = t * 32 + ENC.indexOf(id[i]);
  return t;
}
