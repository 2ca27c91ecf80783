/**
 * The one redaction of secrets carried in URLs (a server target's basic-auth user and password,
 * its query tokens), applied wherever text leaves the process: target ids, logs, the audit log,
 * deployed.json and every JSON answer of the HTTP API. Query values are all redacted (which of
 * them is a token cannot be known); the keys stay, so a reader still sees which URL it is.
 */
const URLS = /\bhttps?:\/\/[^\s"'<>\\]+/gi;
export const REDACTED = '***';

/** A URL without its user, password and query values; text that is not a URL comes back as it is. */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url;
  }
  if (u.username === '' && u.password === '' && u.search === '') return url;
  const auth = u.username !== '' || u.password !== '' ? `${REDACTED}@` : '';
  const query = [...u.searchParams.keys()].map((k) => `${encodeURIComponent(k)}=${REDACTED}`).join('&');
  return `${u.protocol}//${auth}${u.host}${u.pathname}${query === '' ? '' : `?${query}`}${u.hash}`;
}

/** Every http(s) URL inside `text` redacted. */
export function redactSecrets(text: string): string {
  return text.includes('://') ? text.replace(URLS, redactUrl) : text;
}
