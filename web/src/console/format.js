// Pure helpers of the operator console: what a form becomes as an API body, how a certificate,
// a time, a counter or an audit check is shown. No DOM, no fetch: unit-tested in test/console.test.js.

// The operator API's rules, checked here too so a mistake is shown before anything is sent
// (the server checks again and its refusal is shown as it words it; docs/api.md "Operator API").
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
export const MAX_ORG = 64;
export const MIN_PASSWORD = 12;
// Enrollment tokens: from 1 minute to 30 days, default 24 hours (hours, as the API takes them).
export const MIN_TOKEN_HOURS = 1 / 60;
export const MAX_TOKEN_HOURS = 30 * 24;
export const DEFAULT_TOKEN_HOURS = 24;

/** Groups typed as "a, b c": split on commas and white space, empty ones dropped, each once. */
export function splitGroups(text) {
  const out = [];
  for (const part of String(text ?? "").split(/[\s,]+/)) {
    if (part && !out.includes(part)) out.push(part);
  }
  return out;
}

/** Token lifetime in hours from the form's text: a number in range, or an error message. */
export function tokenHours(text) {
  const t = String(text ?? "").trim();
  if (t === "") return { hours: DEFAULT_TOKEN_HOURS };
  const hours = Number(t);
  if (!Number.isFinite(hours) || hours < MIN_TOKEN_HOURS || hours > MAX_TOKEN_HOURS) {
    return { error: `The link's lifetime must be from 1 minute (0.017 h) to ${MAX_TOKEN_HOURS} hours.` };
  }
  return { hours };
}

/**
 * The body of POST /api/v1/admin/users from the add-user form's values
 * ({name, org, profile, groups, inGroups, outGroups, signIn: "enrollment"|"password",
 * password, hours}): ``{body}``, or ``{error}`` with what to fix.
 */
export function addUserBody(form) {
  const name = String(form.name ?? "").trim();
  const org = String(form.org ?? "").trim();
  if (!NAME_RE.test(name)) {
    return { error: "The name must be 1 to 64 letters, digits or . _ @ -, starting with a letter or digit." };
  }
  if (org.length < 1 || org.length > MAX_ORG) return { error: `The organisation must be 1 to ${MAX_ORG} characters.` };
  const body = { name, org };
  const groups = splitGroups(form.groups);
  const inGroups = splitGroups(form.inGroups);
  const outGroups = splitGroups(form.outGroups);
  const split = inGroups.length > 0 || outGroups.length > 0;
  if (split && groups.length > 0) {
    return { error: "Give groups for both directions, or IN and OUT groups, not both." };
  }
  if (split) {
    body.in_groups = inGroups;
    body.out_groups = outGroups;
  } else if (groups.length > 0) {
    body.groups = groups;
  }
  const profile = String(form.profile ?? "").trim();
  if (profile) body.profile = profile;
  if (form.signIn === "password") {
    const password = String(form.password ?? "");
    if (password.length < MIN_PASSWORD) return { error: `The password must have at least ${MIN_PASSWORD} characters.` };
    body.password = password;
  } else {
    const t = tokenHours(form.hours);
    if (t.error) return { error: t.error };
    body.token_ttl_hours = t.hours;
  }
  return { body };
}

/** A certificate's state for the tables: "revoked", "expired", "expiring" (within the window
 * the API used) or "valid", from the API's own flags. */
export function certState(cert) {
  if (cert.revoked) return "revoked";
  if (cert.expired) return "expired";
  if (cert.expiring) return "expiring";
  return "valid";
}

/** The live certificate that expires first (not revoked, not expired), or null. */
export function soonestExpiry(certs) {
  let best = null;
  for (const c of certs ?? []) {
    if (c.revoked || c.expired || !c.not_after) continue;
    if (best === null || Date.parse(c.not_after) < Date.parse(best.not_after)) best = c;
  }
  return best;
}

/** "2026-12-07 13:40 UTC" from an ISO time; "—" for null. */
export function formatTime(iso) {
  if (!iso) return "—";
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return String(iso);
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

/** A duration in words for tables: "45 s", "12 min", "5 h", "3 d". Negative counts as 0. */
export function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 120) return `${min} min`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h`;
  return `${Math.floor(h / 24)} d`;
}

/** "in 12 d" / "3 h ago" for an ISO time relative to ``nowMs``. */
export function relative(iso, nowMs) {
  if (!iso) return "";
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return "";
  return ms >= nowMs ? `in ${formatDuration(ms - nowMs)}` : `${formatDuration(nowMs - ms)} ago`;
}

/** A number with thousands separators ("12,345"); other values as text. */
export function formatCount(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return String(v ?? "—");
  return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

/**
 * Rates per second of the counters (names ending in ``_total``) between two status answers
 * ``elapsedMs`` apart: {name: rate}. A counter that went down (the server restarted) or a
 * missing previous value gives no rate; gauges (no ``_total``) have none.
 */
export function counterRates(previous, current, elapsedMs) {
  const out = {};
  if (!previous || !current || !(elapsedMs > 0)) return out;
  for (const [name, value] of Object.entries(current)) {
    if (!name.endsWith("_total")) continue;
    const before = previous[name];
    if (typeof before !== "number" || typeof value !== "number" || value < before) continue;
    out[name] = ((value - before) * 1000) / elapsedMs;
  }
  return out;
}

/** What a check of the audit log says, in one sentence, and whether it is good. */
export function auditSummary(result) {
  if (!result || result.enabled === false) {
    return { ok: true, text: "No audit log: labels are off, or nothing has been written yet." };
  }
  const n = `${formatCount(result.records)} records, ${formatCount(result.checkpoints)} checkpoints`;
  if (!result.ok) {
    const f = result.failure;
    const where = f ? ` at line ${f.line} (seq ${f.seq}): ${f.reason}${f.detail ? ` (${f.detail})` : ""}` : "";
    return { ok: false, text: `FAILED${where}. ${n} checked before it.` };
  }
  const sig = result.signatures_checked ? "signatures checked" : "signatures not checked (no public key)";
  const part = result.complete ? "" : " Only part of the log was checked in the time allowed.";
  return { ok: true, text: `Verified: ${n}, ${sig}; ${formatCount(result.unsigned_tail)} records after the last checkpoint.${part}` };
}

/** The file name of a download from its Content-Disposition (RFC 6266: ``filename*`` first). */
export function dispositionFilename(header, fallback = "download.zip") {
  if (!header) return fallback;
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      // a bad escape: try the plain name
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"/i.exec(header) ?? /filename\s*=\s*([^;\s]+)/i.exec(header);
  return plain && plain[1] ? plain[1] : fallback;
}

/** The error message of an API refusal ({"error": ...}), else the status. */
export function errorText(err) {
  if (err && err.body && typeof err.body.error === "string") return err.body.error;
  if (err && typeof err.status === "number") return `the server answered ${err.status}`;
  return err && err.message ? err.message : String(err);
}
