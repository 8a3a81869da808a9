/**
 * Roles and permissions of the HTTP API: the one table of who may do what.
 *
 * Every route declares one permission (api/auth.ts checks it on each request):
 *   open     anyone, without a token (GET /v1/health only)
 *   read     look: exports, restore points, sessions, jobs, QoS, mounts
 *   operate  act on VMs: recover, migrate, switch, finish, commit, discard, QoS, mount, verify,
 *            backup and restore (paths still pass the path policy: sourceDirs, targetDirs)
 *   admin    the repository and the daemon: prune, gc, reindex, tokens, configuration
 * A role grants a set of permissions; a token has one role and optionally VM name patterns
 * (`web-*`) that limit which VMs and sessions it may name. A limited token may still read the
 * daemon-wide lists, but a request that acts on every VM (gc, global QoS, a verify of the whole
 * repository, a mount of the whole tree) is refused to it.
 */
import { ReboundError } from '../errors.js';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export const PERMISSIONS = ['open', 'read', 'operate', 'admin'] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** What each role may do. */
export const ROLE_GRANTS: Record<Role, readonly Permission[]> = {
  viewer: ['open', 'read'],
  operator: ['open', 'read', 'operate'],
  admin: ['open', 'read', 'operate', 'admin'],
};

/** One line per role, for docs and `rebound token create --help`. */
export const ROLE_DOCS: Record<Role, string> = {
  viewer: 'read only: exports, restore points, sessions, jobs, QoS, mounts',
  operator: 'viewer, plus recover, migrate, switch, finish, commit, discard, QoS, mount, verify, backup and restore (paths within sourceDirs/targetDirs)',
  admin: 'operator, plus prune, gc, reindex, tokens and the configuration',
};

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

export function isPermission(value: unknown): value is Permission {
  return typeof value === 'string' && (PERMISSIONS as readonly string[]).includes(value);
}

export function roleAllows(role: Role, permission: Permission): boolean {
  return ROLE_GRANTS[role].includes(permission);
}

/** The least role that has `permission` (for error messages and docs). */
export function leastRoleFor(permission: Permission): Role | undefined {
  return ROLES.find((r) => roleAllows(r, permission));
}

/** VM name patterns: VM-name characters plus `*` (any run) and `?` (one character). */
export const VM_PATTERN_RE = /^[A-Za-z0-9._+*?-]{1,128}$/;
export const MAX_VM_PATTERNS = 32;

export function checkVmPatterns(patterns: readonly unknown[]): string[] {
  if (patterns.length > MAX_VM_PATTERNS) throw new ReboundError('ERR_INVALID_ARGUMENT', `at most ${MAX_VM_PATTERNS} VM patterns per token`);
  return patterns.map((p) => {
    if (typeof p !== 'string' || !VM_PATTERN_RE.test(p)) {
      throw new ReboundError('ERR_INVALID_ARGUMENT', `VM pattern '${String(p)}' is not a VM name with * and ? (letters, digits, . _ + -)`);
    }
    return p;
  });
}

/** Whether a VM name matches one glob pattern (`*` any run of characters, `?` one). */
export function vmMatches(pattern: string, vm: string): boolean {
  const re = new RegExp('^' + pattern.replace(/[.+\-]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$', 's');
  return re.test(vm);
}

/** Whether a token limited to `patterns` (none: every VM) may name `vm`. */
export function vmAllowed(patterns: readonly string[] | undefined, vm: string): boolean {
  if (!patterns || patterns.length === 0) return true;
  return patterns.some((p) => vmMatches(p, vm));
}
