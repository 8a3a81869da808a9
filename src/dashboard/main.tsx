/**
 * rebound's dashboard: one Preact app, hash-routed pages (overview, backups, session, jobs, log).
 * State comes from the API once (on login and on navigation) and is then kept current by the event
 * stream (api.ts): session samples replace a session's numbers and feed its graphs, job events
 * replace jobs, notable events go to the log. No polling loops.
 */
import { render } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, ApiError, bytes, duration, setLogoutHandler, setToken, streamEvents, token, type LiveEvent } from './api.js';
import { Graph, type Series } from './graph.js';
import './style.css';

type Any = Record<string, any>;

/** Per-second samples kept per session for the graphs (about four minutes). */
const HISTORY = 240;
const LOG_MAX = 300;

type Sample = {
  t: number;
  readIops: number;
  writeIops: number;
  readBps: number;
  writeBps: number;
  readLatency: number | null;
  writeLatency: number | null;
  overlay: number;
};

interface Store {
  health: Any | null;
  sessions: Map<string, Any>;
  samples: Map<string, Any>;
  history: Map<string, Sample[]>;
  jobs: Map<string, Any>;
  log: LiveEvent[];
  vms: Any[];
  live: boolean;
}

function useRoute(): string[] {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const f = (): void => setHash(location.hash);
    addEventListener('hashchange', f);
    return () => removeEventListener('hashchange', f);
  }, []);
  const parts = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  return parts[0] ? parts : ['overview'];
}

function App() {
  const [authed, setAuthed] = useState(Boolean(token()));
  const [notice, setNotice] = useState('');
  useEffect(() => {
    setLogoutHandler(() => {
      setNotice('Your token was refused (revoked, mistyped or of another daemon): log in again.');
      setAuthed(false);
    });
  }, []);
  return authed ? <Shell onLogout={() => (setToken(null), setAuthed(false))} /> : <Login notice={notice} onLogin={() => (setNotice(''), setAuthed(true))} />;
}

function Login({ notice, onLogin }: { notice: string; onLogin: () => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(notice);
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setToken(value.trim());
    try {
      await api('GET', '/v1/sessions');
      onLogin();
    } catch (err) {
      setToken(null);
      setError(err instanceof ApiError && err.status === 401 ? 'That token is not valid here.' : (err as Error).message);
    }
  };
  return (
    <main class="login">
      <h1>rebound</h1>
      <form onSubmit={submit}>
        <label for="token">API token</label>
        <p class="hint" id="token-hint">
          Paste a token (the first admin token is in <code>DATA/auth/admin.token</code>; make others with <code>rebound token create</code>). It is kept in this tab only.
        </p>
        <input id="token" type="password" autocomplete="off" required aria-describedby="token-hint" value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
        <button type="submit">Log in</button>
        {error && <p role="alert" class="error">{error}</p>}
      </form>
    </main>
  );
}

function Shell({ onLogout }: { onLogout: () => void }) {
  const route = useRoute();
  const [, force] = useState(0);
  const store = useRef<Store>({ health: null, sessions: new Map(), samples: new Map(), history: new Map(), jobs: new Map(), log: [], vms: [], live: false }).current;
  const refresh = useMemo(
    () => async (): Promise<void> => {
      const [health, sessions, jobs, vms] = await Promise.all([api('GET', '/v1/health'), api('GET', '/v1/sessions'), api('GET', '/v1/jobs'), api('GET', '/v1/vms').catch(() => ({ vms: [] }))]);
      store.health = health;
      store.sessions = new Map(sessions.sessions.map((s: Any) => [s.name, s]));
      store.jobs = new Map(jobs.jobs.map((j: Any) => [j.id, j]));
      store.vms = vms.vms;
      force((n) => n + 1);
    },
    [],
  );
  useEffect(() => {
    void refresh().catch(() => undefined);
    const ac = new AbortController();
    let pending = false;
    const redraw = (): void => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => ((pending = false), force((n) => n + 1)));
    };
    void streamEvents(
      (e) => {
        apply(store, e, refresh);
        redraw();
      },
      (live) => ((store.live = live), redraw()),
      ac.signal,
    );
    return () => ac.abort();
  }, []);
  useEffect(() => {
    document.querySelector<HTMLElement>('main h1')?.focus();
  }, [route[0], route[1]]);

  const nav = [
    ['overview', 'Overview'],
    ['backups', 'Backups'],
    ['jobs', 'Jobs'],
    ['log', 'Log'],
  ];
  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header>
        <span class="brand">rebound</span>
        <nav aria-label="Pages">
          {nav.map(([id, label]) => (
            <a href={`#/${id}`} aria-current={route[0] === id ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class={store.live ? 'live on' : 'live'} role="status">
          {store.live ? 'live' : 'reconnecting…'}
        </span>
        <button class="link" onClick={onLogout}>
          Log out
        </button>
      </header>
      <main id="main">
        {route[0] === 'overview' && <Overview store={store} />}
        {route[0] === 'backups' && <Backups store={store} refresh={refresh} />}
        {route[0] === 'session' && <SessionPage store={store} name={route[1] ?? ''} refresh={refresh} />}
        {route[0] === 'jobs' && <Jobs store={store} />}
        {route[0] === 'log' && <Log store={store} />}
      </main>
    </>
  );
}

function apply(store: Store, e: LiveEvent, refresh: () => Promise<void>): void {
  if (e.type !== 'session') {
    store.log.push(e);
    if (store.log.length > LOG_MAX) store.log.shift();
  }
  if (e.type === 'session') {
    const d = e.data;
    store.samples.set(d.session, d);
    const h = store.history.get(d.session) ?? [];
    const sum = (k: string): number => d.disks.reduce((a: number, x: Any) => a + (x[k] ?? 0), 0);
    // The session's latency: the slowest disk's mean (null when no disk served a request).
    const worst = (k: string): number | null => d.disks.reduce((a: number | null, x: Any) => (x[k] === null || x[k] === undefined ? a : Math.max(a ?? 0, x[k])), null);
    h.push({ t: Date.parse(e.at) / 1000, readIops: sum('readIops'), writeIops: sum('writeIops'), readBps: sum('readBps'), writeBps: sum('writeBps'), readLatency: worst('readLatencyMs'), writeLatency: worst('writeLatencyMs'), overlay: d.overlayBytes });
    if (h.length > HISTORY) h.shift();
    store.history.set(d.session, h);
    const s = store.sessions.get(d.session);
    if (s) Object.assign(s, { state: d.state, ageSeconds: d.ageSeconds, overlayBytes: d.overlayBytes, qos: d.qos, warnings: d.warnings });
    else void refresh().catch(() => undefined);
  } else if (e.type === 'session.created' || e.type === 'session.removed') {
    if (e.type === 'session.removed') {
      store.sessions.delete(e.data.session);
      store.samples.delete(e.data.session);
      store.history.delete(e.data.session);
    }
    void refresh().catch(() => undefined);
  } else if (e.type === 'job') {
    store.jobs.set(e.data.job.id, e.data.job);
  } else if (e.type === 'catalog' && e.data.kind === 'point') {
    void refresh().catch(() => undefined);
  }
}

// ---- overview -------------------------------------------------------------------------------

function Overview({ store }: { store: Store }) {
  const h = store.health;
  const [repo, setRepo] = useState<{ stored: number; logical: number; points: number } | null>(null);
  useEffect(() => {
    void (async () => {
      let stored = 0;
      let logical = 0;
      let points = 0;
      for (const v of store.vms) {
        const r = await api('GET', `/v1/vms/${encodeURIComponent(v.vm)}/points`).catch(() => ({ points: [] }));
        for (const p of r.points) {
          points++;
          for (const d of p.disks) {
            stored += d.newBytes ?? 0;
            logical += (d.chunks - d.zeroChunks) * d.chunkSize;
          }
        }
      }
      setRepo({ stored, logical, points });
    })();
  }, [store.vms]);
  const endpoints: Any = h?.endpoints ?? {};
  const running = [...store.jobs.values()].filter((j) => j.state === 'running');
  return (
    <section aria-labelledby="h-overview">
      <h1 id="h-overview" tabIndex={-1}>
        Overview
      </h1>
      <div class="cards">
        <div class="card">
          <h2>Health</h2>
          <p>
            <strong class={h?.status === 'ok' ? 'ok' : 'bad'}>{h?.status ?? '…'}</strong> · version {h?.version ?? '…'} · up {duration(h?.uptimeSeconds)}
          </p>
          <p class="hint">event loop p99 {h?.eventLoopDelay?.sinceStart?.p99Ms ?? '–'} ms</p>
        </div>
        <div class="card">
          <h2>Listeners</h2>
          <dl class="kv">
            {Object.entries(endpoints)
              .filter(([, v]) => (Array.isArray(v) ? v.length > 0 : v !== undefined && v !== null))
              .map(([k, v]) => (
                <>
                  <dt>{k}</dt>
                  <dd>{Array.isArray(v) ? v.join(', ') : String(v)}</dd>
                </>
              ))}
          </dl>
        </div>
        <div class="card">
          <h2>Repository</h2>
          {repo ? (
            <p>
              {bytes(repo.stored)} stored for {bytes(repo.logical)} of disk data in {repo.points} restore point{repo.points === 1 ? '' : 's'} · data reduction (dedup and compression) {repo.stored > 0 ? (repo.logical / repo.stored).toFixed(1) : '–'}×
            </p>
          ) : (
            <p>…</p>
          )}
        </div>
      </div>
      <h2>Running from backup</h2>
      <SessionsTable store={store} />
      <h2>Jobs in progress</h2>
      {running.length === 0 ? <p>None.</p> : <JobList jobs={running} />}
    </section>
  );
}

function SessionsTable({ store }: { store: Store }) {
  const sessions = [...store.sessions.values()];
  if (sessions.length === 0) return <p>No sessions: nothing runs from backup.</p>;
  return (
    <div class="scroll">
      <table>
        <caption class="sr-only">Recovery sessions</caption>
        <thead>
          <tr>
            <th scope="col">Session</th>
            <th scope="col">VM</th>
            <th scope="col">State</th>
            <th scope="col">Age</th>
            <th scope="col">Overlay</th>
            <th scope="col">Write IOPS</th>
            <th scope="col">Warnings</th>
          </tr>
        </thead>
        <tbody>
          {sessions.map((s) => {
            const live = store.samples.get(s.name);
            const iops = live ? live.disks.reduce((a: number, d: Any) => a + (d.writeIops ?? 0), 0) : null;
            return (
              <tr data-session={s.name}>
                <th scope="row">
                  <a href={`#/session/${encodeURIComponent(s.name)}`}>{s.name}</a>
                </th>
                <td>{s.vm}</td>
                <td>{s.state}</td>
                <td>{duration(s.ageSeconds)}</td>
                <td>{bytes(s.overlayBytes)}</td>
                <td>{iops ?? '–'}</td>
                <td class="warn">{(s.warnings ?? []).join('; ')}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

/** done/total of a job's progress, whatever its kind calls them. */
function jobFraction(p: Any | null): { frac: number | null; eta: number | null } {
  if (!p) return { frac: null, eta: null };
  const done = p.doneBytes ?? p.done ?? p.readBytes ?? p.checked;
  const total = p.totalBytes ?? p.total ?? p.sizeBytes;
  const frac = typeof done === 'number' && typeof total === 'number' && total > 0 ? Math.min(1, done / total) : null;
  const eta = typeof p.etaSeconds === 'number' ? p.etaSeconds : p.rate > 0 && frac !== null ? (total - done) / p.rate : null;
  return { frac, eta };
}

function JobList({ jobs }: { jobs: Any[] }) {
  return (
    <ul class="jobs">
      {jobs.map((j) => {
        const { frac, eta } = jobFraction(j.progress);
        const states: string[] = j.progress?.states ?? [];
        return (
          <li data-job={j.id}>
            <span>
              <strong>{j.kind}</strong> {j.params?.session ?? j.params?.vm ?? ''} · {j.state}
              {states.length > 0 && ` · ${states.join(', ')}`}
              {j.error && <span class="error"> · {j.error.message}</span>}
            </span>
            {j.state === 'running' && (
              <span class="bar">
                <progress max={1} value={frac ?? undefined} aria-label={`${j.kind} progress`} />
                {frac !== null && ` ${Math.round(frac * 100)}%`} {eta !== null && `· ETA ${duration(eta)}`}
              </span>
            )}
          </li>
        );
      })}
    </ul>
  );
}

// ---- backups --------------------------------------------------------------------------------

function Backups({ store, refresh }: { store: Store; refresh: () => Promise<void> }) {
  const [vm, setVm] = useState<string | null>(null);
  useEffect(() => {
    if (!vm && store.vms[0]) setVm(store.vms[0].vm);
  }, [store.vms]);
  return (
    <section aria-labelledby="h-backups">
      <h1 id="h-backups" tabIndex={-1}>
        Backups
      </h1>
      {store.vms.length === 0 ? (
        <p>No backups yet.</p>
      ) : (
        <div class="split">
          <nav aria-label="VMs" class="vms">
            <ul>
              {store.vms.map((v) => (
                <li>
                  <button class={v.vm === vm ? 'sel' : ''} aria-pressed={v.vm === vm} onClick={() => setVm(v.vm)}>
                    {v.vm} <span class="hint">({v.points})</span>
                  </button>
                </li>
              ))}
            </ul>
          </nav>
          {vm && <VmPoints vm={vm} refresh={refresh} jobs={[...store.jobs.values()]} />}
        </div>
      )}
    </section>
  );
}

/** The newest verify job that covered a point (of the jobs the daemon keeps), as a short state. */
function verifyState(jobs: Any[], vm: string, point: string): { text: string; bad: boolean } | null {
  const j = jobs
    .filter((x) => x.kind === 'verify' && (x.params?.vm === undefined || (x.params.vm === vm && (x.params.point === undefined || x.params.point === point))))
    .sort((a, b) => b.startedAt.localeCompare(a.startedAt))[0];
  if (!j) return null;
  if (j.state === 'running') return { text: 'verifying…', bad: false };
  if (j.state !== 'succeeded') return { text: `verify ${j.state}${j.error ? `: ${j.error.message}` : ''}`, bad: true };
  const r = j.result ?? {};
  const hit = (r.problems ?? []).filter((p: Any) => p.affected?.some((a: Any) => a.vm === vm && a.point === point)).length;
  const idx = (r.indexProblems ?? []).filter((p: Any) => p.vm === vm && p.point === point).length;
  if (hit + idx > 0) return { text: `verify found ${hit} bad chunk${hit === 1 ? '' : 's'}${idx ? ` and ${idx} index problem${idx === 1 ? '' : 's'}` : ''}`, bad: true };
  return { text: `verified ${new Date(j.finishedAt).toLocaleString()}`, bad: false };
}

function VmPoints({ vm, refresh, jobs }: { vm: string; refresh: () => Promise<void>; jobs: Any[] }) {
  const [points, setPoints] = useState<Any[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const [msg, setMsg] = useState('');
  const [prune, setPrune] = useState<Any | null>(null);
  const [keepLast, setKeepLast] = useState('7');
  const load = (): void => void api('GET', `/v1/vms/${encodeURIComponent(vm)}/points`).then((r) => setPoints(r.points.slice().reverse()), (e) => setMsg(e.message));
  useEffect(load, [vm]);
  const verify = async (p: Any): Promise<void> => {
    const job = await api('POST', '/v1/verify', { vm, point: p.id }).catch((e) => (setMsg(e.message), null));
    if (job) setMsg(`Verify of ${vm}@${p.id} started (job ${job.id}): see Jobs.`);
  };
  const doPrune = async (dryRun: boolean): Promise<void> => {
    try {
      const r = await api('POST', '/v1/prune', { vm, dryRun, keepLast: Number(keepLast) });
      setPrune(r);
      if (!dryRun) (load(), void refresh());
    } catch (e) {
      setMsg((e as Error).message);
    }
  };
  return (
    <div class="points">
      <h2>Restore points of {vm}</h2>
      <p role="status" class="msg">
        {msg}
      </p>
      <ol class="timeline">
        {points.map((p) => (
          <li data-point={p.id}>
            <div class="point-head">
              <strong>{new Date(p.createdAt).toLocaleString()}</strong> <span class={`label ${p.label}`}>{p.label}</span> <code>{p.id}</code> · {bytes(p.disks.reduce((a: number, d: Any) => a + d.size, 0))} ·{' '}
              {p.tags.map((t: string) => (
                <span class="tag">{t}</span>
              ))}
              {(() => {
                const v = verifyState(jobs, vm, p.id);
                return v && <span class={v.bad ? 'verify warn' : 'verify ok'} data-testid="verify-state">{v.text}</span>;
              })()}
            </div>
            <div class="actions">
              <button onClick={() => setOpen(open === `r:${p.id}` ? null : `r:${p.id}`)} aria-expanded={open === `r:${p.id}`}>
                Recover…
              </button>
              <button onClick={() => void verify(p)}>Verify</button>
              <button onClick={() => setOpen(open === `t:${p.id}` ? null : `t:${p.id}`)} aria-expanded={open === `t:${p.id}`}>
                Restore to…
              </button>
            </div>
            {open === `r:${p.id}` && <RecoverForm vm={vm} point={p} onDone={(m) => (setMsg(m), setOpen(null))} />}
            {open === `t:${p.id}` && <RestoreForm vm={vm} point={p} onDone={(m) => (setMsg(m), setOpen(null))} />}
          </li>
        ))}
      </ol>
      <h2>Prune</h2>
      <div class="row">
        <label>
          Keep the last <input type="number" min={0} value={keepLast} onInput={(e) => setKeepLast((e.target as HTMLInputElement).value)} /> points
        </label>
        <button onClick={() => void doPrune(true)}>Preview (dry run)</button>
      </div>
      {prune && (
        <div class="prune" role="region" aria-label="Prune preview">
          <p>
            {prune.dryRun ? 'Would remove' : 'Removed'}: {prune.remove?.length ? prune.remove.map((x: Any) => (typeof x === 'string' ? x : x.id)).join(', ') : 'nothing'}
          </p>
          {prune.dryRun && prune.remove?.length > 0 && (
            <Confirm label={`Prune ${prune.remove.length} points`} what={`${prune.remove.length} restore points of ${vm} (${prune.remove.map((x: Any) => x.id ?? x).join(', ')}) are deleted; their data goes at the next gc.`} onConfirm={() => doPrune(false)} />
          )}
        </div>
      )}
    </div>
  );
}

function RecoverForm({ vm, point, onDone }: { vm: string; point: Any; onDone: (msg: string) => void }) {
  const [name, setName] = useState('');
  const [quota, setQuota] = useState('');
  const [iops, setIops] = useState('');
  const [mbps, setMbps] = useState('');
  const [fe, setFe] = useState({ nbd: true, nfs: false, iscsi: false, fuse: false });
  const [error, setError] = useState('');
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    const body: Any = { vm, point: point.id, publish: fe };
    if (name) body.name = name;
    if (quota) body.quota = Math.round(Number(quota) * 2 ** 30);
    const qos: Any = {};
    if (iops) qos.iops = Number(iops);
    if (mbps) qos.bps = Math.round(Number(mbps) * 2 ** 20);
    if (Object.keys(qos).length) body.qos = qos;
    try {
      const s = await api('POST', '/v1/sessions', body);
      onDone(`Session ${s.name} is running.`);
      location.hash = `#/session/${encodeURIComponent(s.name)}`;
    } catch (err) {
      setError((err as Error).message);
    }
  };
  const id = `rec-${point.id}`;
  return (
    <form class="form" onSubmit={submit} aria-label={`Recover ${vm}@${point.id}`}>
      <label for={`${id}-name`}>Session name</label>
      <input id={`${id}-name`} placeholder="automatic" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
      <label for={`${id}-quota`}>Overlay quota (GiB)</label>
      <input id={`${id}-quota`} type="number" min={0} step="any" placeholder="none" value={quota} onInput={(e) => setQuota((e.target as HTMLInputElement).value)} />
      <label for={`${id}-iops`}>IOPS limit</label>
      <input id={`${id}-iops`} type="number" min={0} placeholder="none" value={iops} onInput={(e) => setIops((e.target as HTMLInputElement).value)} />
      <label for={`${id}-bps`}>Bandwidth limit (MiB/s)</label>
      <input id={`${id}-bps`} type="number" min={0} step="any" placeholder="none" value={mbps} onInput={(e) => setMbps((e.target as HTMLInputElement).value)} />
      <fieldset>
        <legend>Front ends</legend>
        {(['nbd', 'nfs', 'iscsi', 'fuse'] as const).map((k) => (
          <label class="check">
            <input type="checkbox" checked={fe[k]} onChange={(e) => setFe({ ...fe, [k]: (e.target as HTMLInputElement).checked })} /> {k.toUpperCase()}
          </label>
        ))}
      </fieldset>
      <button type="submit">Recover</button>
      {error && <p role="alert" class="error">{error}</p>}
    </form>
  );
}

function RestoreForm({ vm, point, onDone }: { vm: string; point: Any; onDone: (msg: string) => void }) {
  const [disk, setDisk] = useState(point.disks[0]?.name ?? '');
  const [to, setTo] = useState('');
  const [error, setError] = useState('');
  const id = `rst-${point.id}`;
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    try {
      const job = await api('POST', '/v1/restores', { vm, point: point.id, disk, to });
      onDone(`Restore of ${disk} to ${to} started (job ${job.id}).`);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <form class="form" onSubmit={submit} aria-label={`Restore ${vm}@${point.id}`}>
      <label for={`${id}-disk`}>Disk</label>
      <select id={`${id}-disk`} value={disk} onChange={(e) => setDisk((e.target as HTMLSelectElement).value)}>
        {point.disks.map((d: Any) => (
          <option value={d.name}>{d.name}</option>
        ))}
      </select>
      <label for={`${id}-to`}>Target (file, device or nbd:// URI)</label>
      <input id={`${id}-to`} required value={to} onInput={(e) => setTo((e.target as HTMLInputElement).value)} />
      <button type="submit">Restore</button>
      {error && <p role="alert" class="error">{error}</p>}
    </form>
  );
}

/** A button that opens a modal dialog naming what will be lost; confirm runs the action. */
function Confirm({ label, what, onConfirm, danger = true }: { label: string; what: string; onConfirm: () => Promise<void> | void; danger?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  const [busy, setBusy] = useState(false);
  return (
    <>
      <button class={danger ? 'danger' : ''} onClick={() => ref.current?.showModal()}>
        {label}
      </button>
      <dialog ref={ref} aria-labelledby={`dlg-${label}`}>
        <h2 id={`dlg-${label}`}>{label}?</h2>
        <p>{what}</p>
        <div class="row">
          <button autofocus onClick={() => ref.current?.close()}>
            Cancel
          </button>
          <button
            class={danger ? 'danger' : ''}
            disabled={busy}
            onClick={async () => {
              setBusy(true);
              try {
                await onConfirm();
              } finally {
                setBusy(false);
                ref.current?.close();
              }
            }}
          >
            Yes, {label.toLowerCase()}
          </button>
        </div>
      </dialog>
    </>
  );
}

// ---- session --------------------------------------------------------------------------------

function SessionPage({ store, name, refresh }: { store: Store; name: string; refresh: () => Promise<void> }) {
  const [detail, setDetail] = useState<Any | null>(null);
  const [msg, setMsg] = useState('');
  const load = (): void => void api('GET', `/v1/sessions/${encodeURIComponent(name)}`).then(setDetail, (e) => setMsg(e.message));
  useEffect(load, [name]);
  const live = store.samples.get(name);
  const history = store.history.get(name) ?? [];
  const s = store.sessions.get(name);
  if (!detail) return <section><h1 tabIndex={-1}>Session {name}</h1><p role="status">{msg || 'Loading…'}</p></section>;
  const disks: Any[] = live?.disks ?? detail.disks;
  const act = async (what: string, f: () => Promise<unknown>): Promise<void> => {
    try {
      await f();
      setMsg(`${what}: done.`);
      load();
    } catch (e) {
      setMsg(`${what}: ${(e as Error).message}`);
    }
  };
  const migJob = [...store.jobs.values()].reverse().find((j) => j.kind === 'migrate' && j.params?.session === name);
  const overlay = live?.overlayBytes ?? detail.overlayBytes;
  const state = live?.state ?? s?.state ?? detail.state;
  return (
    <section aria-labelledby="h-session">
      <h1 id="h-session" tabIndex={-1}>
        Session {name}
      </h1>
      <p>
        VM <strong>{detail.vm}</strong> from point <code>{detail.point}</code> · state <strong data-testid="session-state">{state}</strong> · up {duration(live?.ageSeconds ?? detail.ageSeconds)} · overlay{' '}
        <strong data-testid="overlay">{bytes(overlay)}</strong>
      </p>
      {(live?.warnings ?? detail.warnings).map((w: string) => (
        <p class="warn">{w}</p>
      ))}
      <p role="status" class="msg">
        {msg}
      </p>

      <h2>Disks</h2>
      {disks.map((d) => {
        const c = detail.connect?.disks?.find((x: Any) => x.disk === d.name);
        const lun = detail.iscsi?.luns?.find((x: Any) => x.disk === d.name);
        return (
          <div class="card disk" data-disk={d.name}>
            <h3>
              {d.name} · {bytes(d.size)} · {d.state}
            </h3>
            <p>
              IOPS <strong data-testid={`iops-${d.name}`}>{d.iops ?? '–'}</strong> (read {d.readIops ?? '–'}, write {d.writeIops ?? '–'}) · read {bytes(d.readBps)}/s · write {bytes(d.writeBps)}/s · latency read{' '}
              <span data-testid={`rlat-${d.name}`}>{d.readLatencyMs ?? '–'}</span> ms, write <span data-testid={`wlat-${d.name}`}>{d.writeLatencyMs ?? '–'}</span> ms · overlay {bytes(d.overlayBytes)}
              {d.quota ? ` of ${bytes(d.quota)}` : ''}
            </p>
            {d.migration && <Migration m={d.migration} />}
            {c && (
              <dl class="conn">
                {c.nbdUri && <CopyLine label="NBD URI" text={c.nbdUri} />}
                {c.qemuDrive && <CopyLine label="QEMU -drive" text={c.qemuDrive} />}
                <CopyLine label="QEMU -blockdev" text={c.qemuBlockdev} />
                <CopyLine label="libvirt" text={c.libvirt} />
              </dl>
            )}
            {lun && (
              <dl class="conn">
                <CopyLine label="iSCSI" text={`${lun.url} (portal ${detail.iscsi.portals.join(', ')}, target ${detail.iscsi.iqn}, LUN ${lun.lun})`} />
              </dl>
            )}
          </div>
        );
      })}

      <h2>Live I/O</h2>
      <div class="graphs">
        <Graph title="IOPS" history={history} series={IOPS_SERIES} />
        <Graph title="Bandwidth" history={history} series={BW_SERIES} unit="bytes" />
        <Graph title="Latency (ms)" history={history} series={LATENCY_SERIES} />
        <Graph title="Overlay" history={history} series={OVERLAY_SERIES} unit="bytes" />
      </div>

      <h2>QoS</h2>
      <Qos name={name} qos={live?.qos ?? detail.qos} onMsg={setMsg} />

      <h2>Migrate to production storage</h2>
      <MigrateForm name={name} onMsg={setMsg} />
      {migJob && <JobList jobs={[migJob]} />}
      <div class="row actions">
        <button onClick={() => void act('Switch', () => api('POST', `/v1/sessions/${encodeURIComponent(name)}/switch`))} disabled={state !== 'in-step'}>
          Switch
        </button>
        <button onClick={() => void act('Commit', () => api('POST', `/v1/sessions/${encodeURIComponent(name)}/commit`, {}))}>Commit as a restore point</button>
        <Confirm
          label={`Finish ${name}`}
          danger={false}
          what={`The session ends: its exports stop and its overlays (${bytes(overlay)}) are deleted. The VM must already run from the migration target.`}
          onConfirm={() => act('Finish', async () => (await api('POST', `/v1/sessions/${encodeURIComponent(name)}/finish`), (location.hash = '#/overview'), refresh()))}
        />
        <Confirm
          label={`Discard ${name}`}
          what={`Everything written to ${name} since restore point ${detail.point} is lost: ${bytes(overlay)} of overlay on ${disks.map((d) => d.name).join(', ')}. Its exports stop at once.`}
          onConfirm={() => act('Discard', async () => (await api('DELETE', `/v1/sessions/${encodeURIComponent(name)}`), (location.hash = '#/overview'), refresh()))}
        />
      </div>
    </section>
  );
}

const IOPS_SERIES: Series[] = [
  { label: 'read', key: 'readIops', stroke: '#2563eb' },
  { label: 'write', key: 'writeIops', stroke: '#dc2626' },
];
const BW_SERIES: Series[] = [
  { label: 'read', key: 'readBps', stroke: '#2563eb' },
  { label: 'write', key: 'writeBps', stroke: '#dc2626' },
];
const LATENCY_SERIES: Series[] = [
  { label: 'read', key: 'readLatency', stroke: '#2563eb' },
  { label: 'write', key: 'writeLatency', stroke: '#dc2626' },
];
const OVERLAY_SERIES: Series[] = [{ label: 'overlay', key: 'overlay', stroke: '#7c3aed' }];

function Migration({ m }: { m: Any }) {
  return (
    <p class="migration" data-testid="migration">
      Migration to <code>{m.target}</code>: <strong>{m.state === 'in-step' ? 'in step' : m.state}</strong> <progress max={100} value={m.percent} aria-label="migration progress" /> {m.percent}% · {bytes(m.rate)}/s ·
      dirty {bytes(m.dirtyBytes)} · ETA {duration(m.etaSeconds)}
      {m.error && <span class="error"> · {m.error}</span>}
    </p>
  );
}

function CopyLine({ label, text }: { label: string; text: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <>
      <dt>{label}</dt>
      <dd>
        <code>{text}</code>{' '}
        <button
          class="small"
          aria-label={`Copy ${label}`}
          onClick={() => void navigator.clipboard?.writeText(text).then(() => (setCopied(true), setTimeout(() => setCopied(false), 1500)))}
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
      </dd>
    </>
  );
}

/** Sliders: 0 is "no limit". A change is sent when the slider is released (or on keyboard change). */
function Qos({ name, qos, onMsg }: { name: string; qos: Any; onMsg: (m: string) => void }) {
  const [iops, setIops] = useState<number>(qos?.iops ?? 0);
  const [mbps, setMbps] = useState<number>(qos?.bps ? Math.round(qos.bps / 2 ** 20) : 0);
  // Limits changed elsewhere (the CLI, another browser) move the sliders too: each change sends both.
  useEffect(() => setIops(qos?.iops ?? 0), [qos?.iops]);
  useEffect(() => setMbps(qos?.bps ? Math.round(qos.bps / 2 ** 20) : 0), [qos?.bps]);
  const send = async (next: { iops: number; mbps: number }): Promise<void> => {
    try {
      const r = await api('PUT', `/v1/sessions/${encodeURIComponent(name)}/qos`, { iops: next.iops, bps: next.mbps * 2 ** 20 });
      onMsg(`QoS: ${r.qos.iops ? `${r.qos.iops} IOPS` : 'no IOPS limit'}, ${r.qos.bps ? `${bytes(r.qos.bps)}/s` : 'no bandwidth limit'}.`);
    } catch (e) {
      onMsg((e as Error).message);
    }
  };
  return (
    <div class="qos">
      <label for="qos-iops">
        IOPS limit: <strong data-testid="qos-iops">{qos?.iops ? qos.iops : 'none'}</strong>
      </label>
      <input id="qos-iops" type="range" min={0} max={20000} step={100} value={iops} aria-valuetext={iops ? `${iops} IOPS` : 'no limit'} onInput={(e) => setIops(Number((e.target as HTMLInputElement).value))} onChange={(e) => void send({ iops: Number((e.target as HTMLInputElement).value), mbps })} />
      <label for="qos-bps">
        Bandwidth limit: <strong data-testid="qos-bps">{qos?.bps ? `${bytes(qos.bps)}/s` : 'none'}</strong>
      </label>
      <input id="qos-bps" type="range" min={0} max={1000} step={10} value={mbps} aria-valuetext={mbps ? `${mbps} MiB per second` : 'no limit'} onInput={(e) => setMbps(Number((e.target as HTMLInputElement).value))} onChange={(e) => void send({ iops, mbps: Number((e.target as HTMLInputElement).value) })} />
    </div>
  );
}

function MigrateForm({ name, onMsg }: { name: string; onMsg: (m: string) => void }) {
  const [to, setTo] = useState('');
  const [rate, setRate] = useState('');
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    try {
      const job = await api('POST', `/v1/sessions/${encodeURIComponent(name)}/migrate`, { to, ...(rate ? { rate: Math.round(Number(rate) * 2 ** 20) } : {}) });
      onMsg(`Migration started (job ${job.id}).`);
    } catch (err) {
      onMsg((err as Error).message);
    }
  };
  return (
    <form class="row" onSubmit={submit} aria-label="Migrate">
      <label>
        Target <input id="mig-to" required placeholder="/var/lib/images/{disk}.raw" value={to} onInput={(e) => setTo((e.target as HTMLInputElement).value)} />
      </label>
      <label>
        Rate (MiB/s) <input id="mig-rate" type="number" min={0} step="any" placeholder="unlimited" value={rate} onInput={(e) => setRate((e.target as HTMLInputElement).value)} />
      </label>
      <button type="submit">Start migration</button>
    </form>
  );
}

// ---- jobs and log ---------------------------------------------------------------------------

function Jobs({ store }: { store: Store }) {
  const jobs = [...store.jobs.values()].sort((a, b) => b.startedAt.localeCompare(a.startedAt));
  return (
    <section aria-labelledby="h-jobs">
      <h1 id="h-jobs" tabIndex={-1}>
        Jobs
      </h1>
      {jobs.length === 0 ? <p>No jobs yet.</p> : <JobList jobs={jobs} />}
    </section>
  );
}

function Log({ store }: { store: Store }) {
  return (
    <section aria-labelledby="h-log">
      <h1 id="h-log" tabIndex={-1}>
        Recent events
      </h1>
      <ol class="log" aria-live="polite">
        {store.log
          .slice()
          .reverse()
          .map((e) => (
            <li>
              <time dateTime={e.at}>{new Date(e.at).toLocaleTimeString()}</time> <strong>{e.type}</strong> {describe(e)}
            </li>
          ))}
      </ol>
    </section>
  );
}

function describe(e: LiveEvent): string {
  const d = e.data;
  if (e.type === 'job') return `${d.job.kind} ${d.job.params?.session ?? d.job.params?.vm ?? ''} ${d.job.state}${d.job.error ? `: ${d.job.error.message}` : ''}`;
  if (e.type === 'catalog') return `${d.change} ${d.kind} ${d.name}`;
  if (e.type === 'session.state') return `${d.session}: ${d.state}`;
  return d.session ?? JSON.stringify(d);
}

render(<App />, document.getElementById('app')!);
