// The signed-in user: the JWT (kept in localStorage so a reload stays signed
// in) and what the client reads from it. The token is checked by the server;
// here it is only decoded to know the user id and when it expires.

const TOKEN_KEY = 'turbochat.token';

/** Decodes a JWT's claims without verifying it; null if it is not a JWT. */
export function decodeToken(token) {
  const parts = String(token).trim().split('.');
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof claims?.sub !== 'string' || claims.sub === '') return null;
    return claims;
  } catch {
    return null;
  }
}

/**
 * Checks a pasted token: returns `{token, claims}` or `{error}` saying what
 * is wrong with it in words a person can act on.
 */
export function parseToken(input, nowSecs = Date.now() / 1000) {
  const token = String(input ?? '').trim().replace(/^Bearer\s+/i, '');
  if (!token) return { error: 'Paste a token first.' };
  const claims = decodeToken(token);
  if (!claims) return { error: 'That is not a JWT (expected three dot-separated parts with a "sub" claim).' };
  if (typeof claims.exp === 'number' && claims.exp <= nowSecs) {
    return { error: `This token expired on ${new Date(claims.exp * 1000).toLocaleString()}. Mint a new one.` };
  }
  return { token, claims };
}

/** The stored session, if any and not expired. */
export function loadSession(storage, nowSecs = Date.now() / 1000) {
  const stored = storage.getItem(TOKEN_KEY);
  if (!stored) return null;
  const parsed = parseToken(stored, nowSecs);
  if (parsed.error) return { expired: true, error: parsed.error };
  return parsed;
}

export function saveToken(storage, token) {
  storage.setItem(TOKEN_KEY, token);
}

export function clearToken(storage) {
  storage.removeItem(TOKEN_KEY);
}
